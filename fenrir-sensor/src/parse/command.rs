//! Package managers' command lines: which program ran, what it was asked to do, and on which
//! targets.
//!
//! In: a command line as an actor carries it (the kernel's argument list, quoted the way a
//! shell would show it) or as a manager's log wrote it (zypper quotes every argument in
//! single quotes, pacman and apk join them with spaces). Out: its words, the program they
//! start and the operands an operation acts on. No state.
//!
//! Each manager's grammar is read only as far as needed to find its operands: the options
//! that take a value (so the value is not read as an operand) and, where the manager has
//! them, its subcommands. dnf and yum are Python scripts: a command line that starts with a
//! Python interpreter is read from the script on.

use std::path::Path;

/// Splits a command line into words: single quotes (with `'\''` for a quote inside), double
/// quotes and backslashes are undone as a shell would; everything else splits on spaces.
#[must_use]
pub fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for quoted in chars.by_ref() {
                    if quoted == '\'' {
                        break;
                    }
                    word.push(quoted);
                }
            }
            '"' => {
                in_word = true;
                while let Some(quoted) = chars.next() {
                    match quoted {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        other => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Joins words into a command line a shell would read back as them, quoting only the words
/// that need it.
#[must_use]
pub fn shell_line(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_./:=+,@%^~".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect();
    quoted.join(" ")
}

/// The package-manager programs whose command lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Dpkg,
    Apt,
    Rpm,
    Dnf,
    Yum,
    Zypper,
    Pacman,
    Apk,
}

impl Program {
    /// Names a program by its file name; `None` for any other program.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "dpkg" => Self::Dpkg,
            "apt" | "apt-get" | "aptitude" => Self::Apt,
            "rpm" => Self::Rpm,
            "dnf" | "dnf-3" | "dnf4" | "dnf5" | "microdnf" => Self::Dnf,
            "yum" | "yum-3" => Self::Yum,
            "zypper" => Self::Zypper,
            "pacman" => Self::Pacman,
            "apk" => Self::Apk,
            _ => return None,
        })
    }
}

/// A command line read as a package manager's: the program and the words after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: Program,
    /// The arguments after the program.
    pub args: Vec<String>,
}

impl Invocation {
    /// Reads a command line; `None` when it does not run a known package manager.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let words = words(line);
        let mut rest = words.iter();
        let mut program = file_name(rest.next()?);
        // A script's interpreter comes first in the kernel's argument list.
        if program.starts_with("python") {
            program = file_name(rest.next()?);
        }
        Some(Self {
            program: Program::from_name(&program)?,
            args: rest.cloned().collect(),
        })
    }

    /// Returns the operands: the arguments that are not options nor the values options take,
    /// after the subcommand for managers that have one. Returns the subcommand too, if any.
    #[must_use]
    pub fn operands(&self) -> (Option<&str>, Vec<&str>) {
        let valued = options_with_values(self.program);
        let has_subcommand = matches!(
            self.program,
            Program::Apt | Program::Dnf | Program::Yum | Program::Zypper | Program::Apk
        );
        let mut subcommand = None;
        let mut operands = Vec::new();
        let mut rest = self.args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                operands.extend(rest.map(String::as_str));
                break;
            }
            if arg.starts_with('-') && arg.len() > 1 {
                if !arg.contains('=') && valued.contains(&arg.as_str()) {
                    rest.next();
                }
                continue;
            }
            if has_subcommand && subcommand.is_none() {
                subcommand = Some(arg.as_str());
            } else {
                operands.push(arg.as_str());
            }
        }
        (subcommand, operands)
    }

    /// Returns whether an option is given, by any of `names` (long options also as
    /// `--name=value`), or, for a single-letter `short`, inside a bundle such as `-Uvh`.
    #[must_use]
    pub fn has_option(&self, names: &[&str], short: Option<char>) -> bool {
        self.options().any(|arg| {
            names.iter().any(|name| {
                arg == *name || arg.strip_prefix(name).is_some_and(|v| v.starts_with('='))
            }) || short.is_some_and(|letter| {
                arg.strip_prefix('-')
                    .is_some_and(|bundle| !bundle.starts_with('-') && bundle.contains(letter))
            })
        })
    }

    /// Returns the options given, values of options left out.
    fn options(&self) -> impl Iterator<Item = &str> {
        let valued = options_with_values(self.program);
        let mut skip = false;
        self.args
            .iter()
            .take_while(|arg| *arg != "--")
            .filter_map(move |arg| {
                if std::mem::take(&mut skip) {
                    return None;
                }
                if !arg.starts_with('-') || arg.len() == 1 {
                    return None;
                }
                skip = !arg.contains('=') && valued.contains(&arg.as_str());
                Some(arg.as_str())
            })
    }

    /// Returns pacman's operation letter (`S`, `U`, `R`, `Q`, …) and the letters bundled
    /// with it, read from `-Syu` or `--sync`-style options.
    #[must_use]
    pub fn pacman_operation(&self) -> Option<(char, String)> {
        let mut operation = None;
        let mut flags = String::new();
        let valued = options_with_values(self.program);
        // `-r /root` and `-b /db` take a value: their letters are no operation or flag.
        for arg in self.options().filter(|arg| !valued.contains(arg)) {
            if let Some(long) = arg.strip_prefix("--") {
                let letter = match long {
                    "sync" => 'S',
                    "upgrade" => 'U',
                    "remove" => 'R',
                    "query" => 'Q',
                    "database" => 'D',
                    "files" => 'F',
                    "deptest" => 'T',
                    "sysupgrade" => {
                        flags.push('u');
                        continue;
                    }
                    "refresh" => {
                        flags.push('y');
                        continue;
                    }
                    "clean" => {
                        flags.push('c');
                        continue;
                    }
                    _ => continue,
                };
                operation.get_or_insert(letter);
            } else if let Some(bundle) = arg.strip_prefix('-') {
                for letter in bundle.chars() {
                    if letter.is_ascii_uppercase() {
                        operation.get_or_insert(letter);
                    } else {
                        flags.push(letter);
                    }
                }
            }
        }
        operation.map(|letter| (letter, flags))
    }
}

/// Returns the options of `program` that take their value as the next word.
#[expect(
    clippy::too_many_lines,
    reason = "one list per manager, easier to check side by side against their manuals"
)]
fn options_with_values(program: Program) -> &'static [&'static str] {
    match program {
        Program::Dpkg => &[
            "--admindir",
            "--root",
            "--instdir",
            "--log",
            "--status-fd",
            "--status-logger",
        ],
        Program::Apt => &[
            "-o",
            "--option",
            "-c",
            "--config-file",
            "-t",
            "--target-release",
        ],
        Program::Rpm => &[
            "-r",
            "--root",
            "--dbpath",
            "--define",
            "-D",
            "--eval",
            "-E",
            "--macros",
            "--rcfile",
            "--pipe",
            "--prefix",
            "--relocate",
            "--excludepath",
            "--qf",
            "--queryformat",
        ],
        Program::Dnf | Program::Yum => &[
            "--installroot",
            "--setopt",
            "-c",
            "--config",
            "--releasever",
            "--disablerepo",
            "--enablerepo",
            "--repo",
            "--repoid",
            "--repofrompath",
            "-x",
            "--exclude",
            "--forcearch",
            "-d",
            "--debuglevel",
            "-e",
            "--errorlevel",
            "--rpmverbosity",
            "--downloaddir",
            "--destdir",
            "--color",
            "--comment",
            "--advisory",
            "--advisories",
            "--bz",
            "--cve",
            "--sec-severity",
            "--secseverity",
        ],
        Program::Zypper => &[
            "-R",
            "--root",
            "-c",
            "--config",
            "-D",
            "--reposd-dir",
            "-C",
            "--cache-dir",
            "--raw-cache-dir",
            "--solv-cache-dir",
            "--pkg-cache-dir",
            "--userdata",
            "-r",
            "--repo",
            "--from",
            "-t",
            "--type",
            "--download",
        ],
        Program::Pacman => &[
            "-r",
            "--root",
            "-b",
            "--dbpath",
            "--cachedir",
            "--config",
            "--logfile",
            "--gpgdir",
            "--hookdir",
            "--arch",
            "--sysroot",
            "--color",
            "--assume-installed",
            "--ignore",
            "--ignoregroup",
            "--overwrite",
            "--print-format",
        ],
        Program::Apk => &[
            "-p",
            "--root",
            "-X",
            "--repository",
            "--repositories-file",
            "--keys-dir",
            "--cache-dir",
            "--arch",
            "-t",
            "--virtual",
            "--wait",
            "--progress-fd",
            "--timeout",
        ],
    }
}

fn file_name(word: &str) -> String {
    Path::new(word).file_name().map_or_else(
        || word.to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Returns whether a pacman command line, as pacman.log's `Running '…'` line wrote it, can
/// start a transaction: `-S` with targets or `-u`, `-U` or `-R` with targets. A refresh
/// alone (`-Sy`), a cache clean (`-Sc`), `-S` without targets (an error before pacman locks
/// its database) and the database and file operations start none. A line that cannot be
/// read is taken to be able to.
#[must_use]
pub fn pacman_may_transact(command: &str) -> bool {
    let Some(invocation) = Invocation::parse(command).filter(|i| i.program == Program::Pacman)
    else {
        return true;
    };
    let Some((operation, flags)) = invocation.pacman_operation() else {
        return true;
    };
    let has_targets = !invocation.operands().1.is_empty();
    match operation {
        'S' => !flags.contains('c') && (has_targets || flags.contains('u')),
        'U' | 'R' => has_targets,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_undo_shell_and_zypper_quoting() {
        assert_eq!(
            words("'zypper' '--root' '/r' 'in' 'a b'"),
            ["zypper", "--root", "/r", "in", "a b"]
        );
        assert_eq!(
            words(r"dpkg -i 'it'\''s here.deb'  x"),
            ["dpkg", "-i", "it's here.deb", "x"]
        );
        assert_eq!(
            words(r#"apk add "a\"b" c\ d"#),
            ["apk", "add", "a\"b", "c d"]
        );
        assert!(words("   ").is_empty());
        assert_eq!(words("''"), [""]);
    }

    #[test]
    fn shell_lines_read_back_as_their_words() {
        let line = shell_line(&words("'zypper' '--root' '/r' 'in' 'a b' 'it'\\''s'"));
        assert_eq!(line, r"zypper --root /r in 'a b' 'it'\''s'");
        assert_eq!(
            words(&line),
            ["zypper", "--root", "/r", "in", "a b", "it's"]
        );
        assert_eq!(shell_line(&[String::new()]), "''");
    }

    #[test]
    fn scripts_are_read_from_the_script_on() {
        let dnf = Invocation::parse("/usr/bin/python3 /usr/bin/dnf -y install ./x.rpm")
            .expect("dnf is a package manager");
        assert_eq!(dnf.program, Program::Dnf);
        assert_eq!(dnf.operands(), (Some("install"), vec!["./x.rpm"]));
        assert_eq!(Invocation::parse("/bin/sh -c true"), None);
        assert_eq!(Invocation::parse(""), None);
    }

    #[test]
    fn option_values_are_not_operands() {
        let zypper = Invocation::parse("zypper --non-interactive --root /srv/z in -r repo ./a.rpm")
            .expect("zypper");
        assert_eq!(zypper.operands(), (Some("in"), vec!["./a.rpm"]));
        let rpm = Invocation::parse("rpm --root /r --dbpath /var/lib/rpm -ivh x.rpm").expect("rpm");
        assert_eq!(rpm.operands(), (None, vec!["x.rpm"]));
        assert!(rpm.has_option(&["--install"], Some('i')));
        assert!(!rpm.has_option(&["--erase"], Some('e')));
        let pacman =
            Invocation::parse("pacman --noconfirm -r /srv/p --config=/c -U -- -odd.pkg.tar.zst")
                .expect("pacman");
        assert_eq!(pacman.operands(), (None, vec!["-odd.pkg.tar.zst"]));
        assert_eq!(pacman.pacman_operation(), Some(('U', String::new())));
    }

    #[test]
    fn pacman_runs_that_cannot_transact_are_told_apart() {
        for command in [
            "pacman -S vim",
            "pacman -Syu",
            "pacman -Syyu --noconfirm",
            "pacman -r /mnt -Sy --cachedir=/mnt/var/cache/pacman/pkg base base-devel",
            "pacman -U file:///var/cache/pacman/pkg/alsa-lib-1.2.12-1-x86_64.pkg.tar.zst",
            "pacman -Rns vim",
            "pacman --sync --sysupgrade",
            "not a pacman line",
        ] {
            assert!(pacman_may_transact(command), "{command}");
        }
        for command in [
            "pacman -S",
            "pacman -Sy",
            "pacman -Scc",
            "pacman -Sc --noconfirm",
            "pacman -D --asdeps vim",
            "pacman -Fy",
            "pacman -r /mnt -Sy",
            "pacman -U",
        ] {
            assert!(!pacman_may_transact(command), "{command}");
        }
    }
}
