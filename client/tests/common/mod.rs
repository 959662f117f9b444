//! What the client's process-starting tests share.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigHandler, Signal, signal};

/// Makes `cmd`'s child start with the default action for SIGINT, SIGTERM and SIGHUP.
///
/// A test run started from a background job (`cargo test &`, a CI script, `setsid`) has
/// SIGINT ignored, and an ignored signal stays ignored across `exec`: a child relying on the
/// default action would then outlive the Ctrl-C the test sends it.
pub fn default_signals(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed: it calls signal(2) (async-signal-safe per POSIX)
    // and neither allocates nor takes a lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                signal(s, SigHandler::SigDfl)?;
            }
            Ok(())
        })
    }
}
