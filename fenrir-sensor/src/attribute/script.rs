//! What a package's maintainer scripts ran.
//!
//! In: exec records of a dpkg run's descendants. Out: for each package, its scripts and every
//! command they started, in exec order and bounded. State: the scripts seen so far per run,
//! and which process is which package's script.
//!
//! dpkg runs `<admindir>/info/<package>[:<arch>].<script>` for installed packages and
//! `<admindir>/tmp.ci/<script>` for the archive being unpacked; a command belongs to the
//! package of the nearest maintainer script above it in its process chain.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::source::exec::ExecRecord;

/// Commands kept per package; more are counted, not listed.
pub const MAX_COMMANDS: usize = 32;

/// dpkg runs in progress whose scripts are kept; dpkg runs one at a time per database.
const RUNS_KEPT: usize = 64;

/// The scripts dpkg runs for a package.
const SCRIPT_KINDS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

/// A maintainer script named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPath {
    /// `None` for a script of the archive being unpacked (`tmp.ci`), which the path does not
    /// name.
    pub package: Option<String>,
    pub arch: Option<String>,
    pub kind: &'static str,
}

/// Recognizes a maintainer script by the path dpkg executes.
#[must_use]
pub fn maintainer_script(filename: &str) -> Option<ScriptPath> {
    let path = Path::new(filename);
    let name = path.file_name()?.to_str()?;
    let parent = path.parent()?.file_name()?.to_str()?;

    if parent == "tmp.ci" {
        let kind = SCRIPT_KINDS.iter().find(|k| **k == name)?;
        return Some(ScriptPath {
            package: None,
            arch: None,
            kind,
        });
    }
    if parent != "info" {
        return None;
    }
    let (stem, extension) = name.rsplit_once('.')?;
    let kind = SCRIPT_KINDS.iter().find(|k| **k == extension)?;
    let (package, arch) = match stem.split_once(':') {
        Some((package, arch)) => (package, Some(arch.to_owned())),
        None => (stem, None),
    };
    Some(ScriptPath {
        package: Some(package.to_owned()),
        arch,
        kind,
    })
}

/// A maintainer script process and the dpkg run it belongs to.
#[derive(Debug, Clone)]
struct RunningScript {
    run: u32,
    script: ScriptPath,
}

/// The commands one package's scripts ran during one dpkg run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackageScripts {
    pub package: Option<String>,
    pub arch: Option<String>,
    /// `{pid, uid, script, command}` per exec, at most [`MAX_COMMANDS`].
    pub commands: Vec<Value>,
    /// Execs beyond the bound.
    pub omitted: usize,
}

/// Maintainer-script activity of the dpkg runs in progress.
#[derive(Debug, Default)]
pub struct ScriptLog {
    /// Script processes by pid.
    scripts: HashMap<u32, RunningScript>,
    /// Per dpkg run, per package (in first-seen order).
    runs: HashMap<u32, Vec<PackageScripts>>,
}

impl ScriptLog {
    /// Takes an exec of a descendant of the dpkg run `run`.
    pub fn record(&mut self, run: u32, exec: &ExecRecord, command: &str) {
        let script = if let Some(script) = maintainer_script(&exec.filename) {
            let running = RunningScript {
                run,
                script: script.clone(),
            };
            self.scripts.insert(exec.tgid, running);
            script
        } else {
            // Anything else belongs to the nearest script above it, if any.
            let Some(running) = exec
                .ancestry
                .iter()
                .find_map(|ancestor| self.scripts.get(&ancestor.pid))
                .filter(|running| running.run == run)
            else {
                return;
            };
            running.script.clone()
        };
        let ScriptPath {
            package,
            arch,
            kind,
        } = script;

        if self.runs.len() >= RUNS_KEPT && !self.runs.contains_key(&run) {
            // Runs whose exit was never seen (a lost record); forget them rather than grow.
            self.runs.clear();
            self.scripts.clear();
        }
        let packages = self.runs.entry(run).or_default();
        let index = if let Some(index) = packages
            .iter()
            .position(|p| p.package == package && p.arch == arch)
        {
            index
        } else {
            packages.push(PackageScripts {
                package,
                arch,
                ..PackageScripts::default()
            });
            packages.len() - 1
        };
        let entry = &mut packages[index];
        if entry.commands.len() < MAX_COMMANDS {
            entry.commands.push(json!({
                "pid": exec.tgid,
                "uid": exec.uid,
                "script": kind,
                "command": command,
            }));
        } else {
            entry.omitted += 1;
        }
    }

    /// Returns and forgets what the scripts of dpkg run `run` did.
    pub fn finish(&mut self, run: u32) -> Vec<PackageScripts> {
        self.scripts.retain(|_, running| running.run != run);
        self.runs.remove(&run).unwrap_or_default()
    }
}

/// Gives the scripts of the archive being unpacked (`tmp.ci`) to `package`, merged in front
/// of the package's own scripts: they ran first.
pub fn assign_unpacked(scripts: &mut Vec<PackageScripts>, package: &str, arch: Option<&str>) {
    let Some(index) = scripts.iter().position(|s| s.package.is_none()) else {
        return;
    };
    let mut unpacked = scripts.remove(index);
    unpacked.package = Some(package.to_owned());
    unpacked.arch = arch.map(str::to_owned);

    let Some(own) = scripts
        .iter_mut()
        .find(|s| s.package.as_deref() == Some(package))
    else {
        scripts.insert(index, unpacked);
        return;
    };
    let room = MAX_COMMANDS.saturating_sub(unpacked.commands.len());
    let kept = own.commands.len().min(room);
    unpacked.omitted += own.omitted + (own.commands.len() - kept);
    unpacked.commands.extend(own.commands.drain(..kept));
    *own = unpacked;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_name_package_arch_and_kind() {
        let script = maintainer_script("/var/lib/dpkg/info/openssh-server.postinst");
        assert_eq!(
            script,
            Some(ScriptPath {
                package: Some("openssh-server".into()),
                arch: None,
                kind: "postinst"
            })
        );
        let script = maintainer_script("/srv/root/var/lib/dpkg/info/libc6:amd64.preinst");
        assert_eq!(script.and_then(|s| s.arch), Some("amd64".into()));
        let script = maintainer_script("/var/lib/dpkg/tmp.ci/preinst");
        assert_eq!(
            script,
            Some(ScriptPath {
                package: None,
                arch: None,
                kind: "preinst"
            })
        );
        assert_eq!(maintainer_script("/var/lib/dpkg/info/vim.md5sums"), None);
        assert_eq!(maintainer_script("/usr/sbin/useradd"), None);
    }

    fn entry(package: Option<&str>, commands: &[&str]) -> PackageScripts {
        PackageScripts {
            package: package.map(str::to_owned),
            arch: None,
            commands: commands.iter().map(|c| json!({ "command": c })).collect(),
            omitted: 0,
        }
    }

    #[test]
    fn unpack_time_scripts_join_their_package_first() {
        let mut scripts = vec![entry(None, &["preinst"]), entry(Some("vim"), &["postinst"])];
        assign_unpacked(&mut scripts, "vim", Some("amd64"));
        assert_eq!(scripts.len(), 1);
        assert_eq!(scripts[0].package.as_deref(), Some("vim"));
        assert_eq!(scripts[0].arch.as_deref(), Some("amd64"));
        let order: Vec<&str> = scripts[0]
            .commands
            .iter()
            .filter_map(|c| c["command"].as_str())
            .collect();
        assert_eq!(order, ["preinst", "postinst"]);
    }
}
