//! User names for uids, looked up once each.
//!
//! In: uids from kernel records. Out: names from the system's user database (`/etc/passwd`
//! and whatever NSS adds). State: a cache, so a burst of events costs one lookup per user.

use std::collections::HashMap;

use nix::unistd::{Uid, User};

use crate::event::escape_control;

/// A cache of uid → user name.
#[derive(Debug, Default)]
pub struct UserNames {
    known: HashMap<u32, Option<String>>,
}

impl UserNames {
    /// Returns the name of `uid`, or `None` for a uid without an account.
    pub fn name(&mut self, uid: u32) -> Option<String> {
        self.known
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|user| escape_control(&user.name).into_owned())
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name_and_unknown_uids_do_not() {
        let mut names = UserNames::default();
        assert_eq!(names.name(0).as_deref(), Some("root"));
        assert_eq!(names.name(3_999_999_999), None);
    }
}
