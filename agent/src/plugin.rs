//! Run as a kubectl plugin: kubectl runs `kubectl-nodeguard` from `PATH` for `kubectl
//! nodeguard …` (its plugin convention: the executable's name, dashes for spaces). Under that
//! name help and usage say `kubectl nodeguard`, so what they show is what the user types.

use std::ffi::OsStr;
use std::path::Path;

/// The executable name kubectl looks for.
pub const PLUGIN_EXECUTABLE: &str = "kubectl-nodeguard";

/// Whether `argv0` (the name this process was run by) is the plugin's.
pub fn invoked_as_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == PLUGIN_EXECUTABLE)
}

/// The command as users call it: `kubectl nodeguard` under the plugin's name.
pub fn command_for(argv0: Option<&OsStr>, command: clap::Command) -> clap::Command {
    if invoked_as_plugin(argv0) {
        command
            .bin_name("kubectl nodeguard")
            .display_name("kubectl nodeguard")
    } else {
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_plugin_name_makes_help_say_kubectl_nodeguard() {
        assert!(invoked_as_plugin(Some(OsStr::new(
            "/usr/local/bin/kubectl-nodeguard"
        ))));
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-nodeguard"))));
        assert!(!invoked_as_plugin(Some(OsStr::new("/usr/bin/nodeguard"))));
        assert!(!invoked_as_plugin(Some(OsStr::new(
            "kubectl-nodeguard-old"
        ))));
        assert!(!invoked_as_plugin(None));
    }
}
