//! Stopping a run on SIGINT (Ctrl-C) or SIGTERM (`kill`, systemd, a batch system): the first
//! signal sets [`STOP`], which the scheduler and the Slurm executor read to stop scheduling
//! and cancel what runs; the run then records how it ended and exits with 128 + the signal
//! (130, 143). A second signal ends the process at once, for a stage that ignores
//! cancellation, after SIGKILLing the process groups of the external programs it runs.
//!
//! External programs (`command` stages) run in process groups of their own, registered
//! here, so a cancelled run can end each program together with everything it started.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::outcome::RunStatus;

/// Set by the first SIGINT or SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// The first signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Process groups of running external programs (0: free slot), for the second-signal exit.
const SLOTS: usize = 256;
static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// The signal that stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The first SIGINT or SIGTERM this process received, if any.
    pub fn received() -> Option<Signal> {
        match RECEIVED.load(Ordering::SeqCst) {
            libc::SIGINT => Some(Signal::Interrupt),
            libc::SIGTERM => Some(Signal::Terminate),
            _ => None,
        }
    }

    /// `status` in `run.json` for a run this signal stopped.
    pub fn status(self) -> RunStatus {
        match self {
            Signal::Interrupt => RunStatus::Interrupted,
            Signal::Terminate => RunStatus::Terminated,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// 128 + the signal number, as a shell reports a process the signal ended.
    pub fn exit_code(self) -> i32 {
        128 + match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
        }
    }

    /// Why the local scheduler stops, for the progress report.
    pub fn stopping_jobs(self) -> &'static str {
        match self {
            Signal::Interrupt => "interrupted (Ctrl-C): stopping running jobs",
            Signal::Terminate => "terminated (SIGTERM): stopping running jobs",
        }
    }

    /// Why the Slurm executor stops, for the progress report.
    pub fn cancelling_slurm_jobs(self) -> &'static str {
        match self {
            Signal::Interrupt => "interrupted (Ctrl-C): cancelling the submitted Slurm jobs",
            Signal::Terminate => "terminated (SIGTERM): cancelling the submitted Slurm jobs",
        }
    }
}

/// The reason to report when a run stops on [`STOP`]: the signal's, else Ctrl-C's (a stop
/// flag set without a signal, as in tests).
pub fn stopping_jobs() -> &'static str {
    Signal::received()
        .unwrap_or(Signal::Interrupt)
        .stopping_jobs()
}

pub fn cancelling_slurm_jobs() -> &'static str {
    Signal::received()
        .unwrap_or(Signal::Interrupt)
        .cancelling_slurm_jobs()
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe operations here: atomics, kill, _exit.
    if let Err(first) = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst) {
        kill_groups(libc::SIGKILL);
        // SAFETY: _exit is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(128 + first) };
    }
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT and SIGTERM handlers. Call once, before a run starts its work.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics and calls
        // async-signal-safe functions. SA_RESTART keeps blocking reads and writes going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn kill_groups(sig: libc::c_int) {
    for slot in &GROUPS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill is async-signal-safe; a negative pid names a process group.
            unsafe { libc::kill(-pgid, sig) };
        }
    }
}

/// A registered process group; dropping it unregisters it.
pub struct Group {
    slot: Option<usize>,
    pgid: i32,
}

impl Group {
    /// Registers the process group `pgid` (a child started with `process_group(0)` leads
    /// the group named by its pid). With every slot taken, the group is still signalled by
    /// [`Group::terminate`], only not on a second-signal exit.
    pub fn register(pgid: u32) -> Group {
        let pgid = pgid as i32;
        let slot = GROUPS.iter().position(|s| {
            s.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Group { slot, pgid }
    }

    /// Sends `sig` to every process of the group.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on a process group this process created.
        unsafe { libc::kill(-self.pgid, sig) };
    }

    /// Ends the group led by `child`: SIGTERM to all of it, SIGKILL to whatever is left
    /// once the leader has exited or after `grace`, then reaps the leader.
    pub fn terminate(&self, child: &mut std::process::Child, grace: std::time::Duration) {
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                _ => break,
            }
        }
        // Members that outlive the leader (background jobs, or ones ignoring SIGTERM).
        self.signal(libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            GROUPS[slot].store(0, Ordering::SeqCst);
        }
    }
}

/// Makes `command` start its program in a new process group (so terminal signals and the
/// run's cancellation reach the program and everything it starts, and nothing else), and on
/// Linux asks the kernel to SIGKILL the program when the thread that started it ends, so a
/// program does not outlive a cbound that was itself SIGKILLed (its own children can: they
/// are in its group but have no such request).
/// Kills (SIGKILL) every process left over from an earlier attempt of the same instance:
/// those whose environment holds `CBOUND_OUT=<out>` (every program of a `command` stage and
/// whatever it started inherit it). A SIGKILLed cbound cannot end the grandchildren of its
/// programs, and a rerun reuses the same staging directory, so they would write into it beside
/// the new attempt. Linux only (it reads /proc); returns how many were killed.
pub fn kill_leftovers(out: &std::path::Path) -> usize {
    #[cfg(target_os = "linux")]
    {
        let needle = {
            let mut v = b"CBOUND_OUT=".to_vec();
            v.extend_from_slice(out.as_os_str().as_encoded_bytes());
            v
        };
        let own = std::process::id();
        let mut killed = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == own {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_slice())
            {
                // SAFETY: kill with a positive pid that read its own environ a moment ago.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed += 1;
            }
        }
        killed
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = out;
        0
    }
}

pub fn own_group(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid is called here, in the parent; the closure runs between fork and
        // exec and only calls the async-signal-safe prctl and getppid.
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // cbound died between fork and prctl: the request came too late.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
}
