//! Signals through the real binary: SIGTERM stops a run like Ctrl-C and is recorded as
//! such; a `command` stage's program and everything it started end with the run; a SIGKILLed
//! cbound takes its direct children along. Every wait here is bounded.

#![cfg(target_os = "linux")]

mod common;
use common::{read_rows, Project};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A pipeline whose `wait` stage starts a process group of three: the shell (`leader.pid`),
/// a background `sleep` (`bg.pid`) and a background subshell that writes `late.txt` into
/// the project after 2 s, unless it is ended first. With `fast` present in the project it
/// writes its result at once instead.
fn pipeline(dir: &Path, prelude: &str) -> String {
    let script = format!(
        "if [ -e DIR/fast ]; then echo ok > \"$CBOUND_OUT/result.txt\"; exit 0; fi; {prelude} \
         echo $$ > DIR/leader.pid; (sleep 2; echo late > DIR/late.txt) & \
         sleep 30 & echo $! > DIR/bg.pid; touch DIR/started; wait"
    )
    .replace("DIR", &dir.display().to_string());
    format!(
        "name: slow\nstages:\n  quick: {{kind: synthetic, params: {{n: 20}}}}\n  wait:\n    kind: command\n    inputs: quick\n    params:\n      argv: [sh, -c, '{script}']\n"
    )
}

/// Kills whatever a test leaves behind, even when it fails: cbound and the stage's group.
struct Cleanup {
    dir: PathBuf,
    cbound: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.cbound {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pgid) = read_pid(&self.dir.join("leader.pid")) {
            // SAFETY: kill(2) on the test's own stage process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Polls `cond` every 20 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// State, parent and process group of a process, from /proc.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Gone, or a zombie that nobody reaped yet (it runs nothing).
fn dead(pid: i32) -> bool {
    !matches!(stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Live processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((s, _, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

fn start(p: &Project) -> Cleanup {
    let stderr = std::fs::File::create(p.path().join("cbound.err")).unwrap();
    let child = p
        .command(&["run", "slow.yaml", "--progress", "lines"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut cleanup = Cleanup {
        dir: p.path().to_path_buf(),
        cbound: Some(child),
    };
    let started = p.path().join("started");
    let up = wait_until(Duration::from_secs(60), || {
        started.exists() && read_pid(&p.path().join("bg.pid")).is_some()
    });
    if !up {
        let status = cleanup.cbound.as_mut().unwrap().try_wait();
        panic!(
            "the stage did not start ({status:?}):\n{}",
            std::fs::read_to_string(p.path().join("cbound.err")).unwrap_or_default()
        );
    }
    cleanup
}

fn send(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for cbound to exit, for at most `timeout`.
fn exit_of(cleanup: &mut Cleanup, timeout: Duration) -> ExitStatus {
    let child = cleanup.cbound.as_mut().unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            cleanup.cbound = None;
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "cbound did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_json(p: &Project) -> serde_json::Value {
    run_json_of(p, "slow")
}

fn run_json_of(p: &Project, pipeline: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.latest(pipeline).join("run.json")).unwrap()).unwrap()
}

fn stderr_of(p: &Project) -> String {
    std::fs::read_to_string(p.path().join("cbound.err")).unwrap_or_default()
}

/// The stage's processes are all gone within a few seconds (they were signalled before
/// cbound exited; a zombie nobody reaps counts as gone).
fn assert_group_ended(p: &Project) {
    let leader = read_pid(&p.path().join("leader.pid")).unwrap();
    let bg = read_pid(&p.path().join("bg.pid")).unwrap();
    let ended = wait_until(Duration::from_secs(5), || {
        dead(leader) && dead(bg) && group_members(leader).is_empty()
    });
    assert!(
        ended,
        "processes of the stage outlived the run: leader {leader} dead {}, sleep {bg} dead {}, group {:?}",
        dead(leader),
        dead(bg),
        group_members(leader)
    );
}

#[test]
fn sigterm_stops_the_run_records_terminated_and_exits_143() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), ""));
    let mut cleanup = start(&p);
    let t0 = Instant::now();
    send(cleanup.cbound.as_ref().unwrap(), "-TERM");
    let status = exit_of(&mut cleanup, Duration::from_secs(20));
    let stderr = stderr_of(&p);
    assert_eq!(status.code(), Some(143), "{status:?}\n{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("terminated (SIGTERM)"), "{stderr}");
    let record = run_json(&p);
    assert_eq!(record["status"], "terminated", "{record}");
    assert_eq!(record["signal"], "SIGTERM", "{record}");
    assert!(record["finished"].is_string(), "{record}");
    let rows = read_rows(&p.latest("slow").join("results.parquet"));
    let wait = rows.iter().find(|r| r["instance"] == "wait").unwrap();
    assert_eq!(wait["status"], "cancelled", "{rows:?}");
    assert_group_ended(&p);
}

#[test]
fn an_instance_stopped_by_sigint_is_cancelled_not_failed_and_plan_why_says_so() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), ""));
    let mut cleanup = start(&p);
    send(cleanup.cbound.as_ref().unwrap(), "-INT");
    let status = exit_of(&mut cleanup, Duration::from_secs(20));
    let stderr = stderr_of(&p);
    assert_eq!(status.code(), Some(130), "{status:?}\n{stderr}");
    // The line reporter names it with the status results.parquet uses.
    assert!(stderr.contains("cancelled wait"), "{stderr}");
    assert!(!stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.contains("0 failed, 1 cancelled"), "{stderr}");
    let rows = read_rows(&p.latest("slow").join("results.parquet"));
    let wait = rows.iter().find(|r| r["instance"] == "wait").unwrap();
    assert_eq!(wait["status"], "cancelled", "{rows:?}");
    assert!(
        wait["error"]
            .as_str()
            .unwrap()
            .starts_with("cancelled: the run was stopped"),
        "{wait}"
    );
    let quick = rows.iter().find(|r| r["instance"] == "quick").unwrap();
    assert_eq!(quick["status"], "ok", "{rows:?}");
    let record = run_json(&p);
    assert_eq!(record["status"], "interrupted", "{record}");
    assert_eq!(record["counts"]["cancelled"], 1, "{record}");
    assert_eq!(record["counts"]["failed"], 0, "{record}");
    assert_group_ended(&p);
    let why = p.cbound(&["plan", "slow.yaml", "--why"]);
    assert_eq!(why.code, 0, "{}", why.all());
    let line = why
        .stdout
        .lines()
        .find(|l| l.contains(" wait "))
        .unwrap_or_default();
    assert!(
        line.starts_with("run ") && line.contains("last attempt was cancelled"),
        "{}",
        why.all()
    );
    assert!(!why.stdout.contains("failed"), "{}", why.all());
}

#[test]
fn sigint_ends_the_whole_process_group_of_a_command() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), ""));
    let mut cleanup = start(&p);
    send(cleanup.cbound.as_ref().unwrap(), "-INT");
    let status = exit_of(&mut cleanup, Duration::from_secs(20));
    let stderr = stderr_of(&p);
    assert_eq!(status.code(), Some(130), "{status:?}\n{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let record = run_json(&p);
    assert_eq!(record["status"], "interrupted", "{record}");
    assert_eq!(record["signal"], "SIGINT", "{record}");
    assert_group_ended(&p);
}

#[test]
fn a_program_ignoring_sigterm_is_killed_after_the_grace_period() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), "trap \"\" TERM;"));
    let mut cleanup = start(&p);
    send(cleanup.cbound.as_ref().unwrap(), "-TERM");
    let status = exit_of(&mut cleanup, Duration::from_secs(30));
    let stderr = stderr_of(&p);
    assert_eq!(status.code(), Some(143), "{status:?}\n{stderr}");
    assert_eq!(run_json(&p)["status"], "terminated");
    assert_group_ended(&p);
}

#[test]
fn a_second_signal_exits_at_once_and_kills_the_programs() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), "trap \"\" TERM;"));
    let mut cleanup = start(&p);
    let t0 = Instant::now();
    send(cleanup.cbound.as_ref().unwrap(), "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    send(cleanup.cbound.as_ref().unwrap(), "-INT");
    let status = exit_of(&mut cleanup, Duration::from_secs(20));
    // Without waiting out the 3 s grace the first signal gives the program.
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(143), "{status:?}\n{}", stderr_of(&p));
    assert_group_ended(&p);
}

#[test]
fn rerun_after_sigterm_is_not_mixed_with_the_killed_runs_programs() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), ""));
    let mut cleanup = start(&p);
    send(cleanup.cbound.as_ref().unwrap(), "-TERM");
    let status = exit_of(&mut cleanup, Duration::from_secs(20));
    assert_eq!(status.code(), Some(143), "{}", stderr_of(&p));
    // No child of the killed run is alive once it has exited...
    let leader = read_pid(&p.path().join("leader.pid")).unwrap();
    let bg = read_pid(&p.path().join("bg.pid")).unwrap();
    assert!(
        group_members(leader).is_empty() && dead(leader) && dead(bg),
        "still alive after cbound exited: {:?}",
        group_members(leader)
    );
    // ...so the rerun's outputs are its own alone, and nothing writes after it.
    p.write("fast", "");
    let rerun = p.cbound(&["run", "slow.yaml", "--progress", "none"]);
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    let result = p.latest("slow").join("wait").join("wait");
    assert_eq!(
        std::fs::read_to_string(result.join("result.txt")).unwrap(),
        "ok\n"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !p.path().join("late.txt").exists(),
        "a program of the killed run kept running and wrote late.txt"
    );
    let mut names: Vec<String> = std::fs::read_dir(&result)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        !names.iter().any(|n| n == "late.txt"),
        "outputs of the rerun: {names:?}"
    );
    assert_eq!(run_json(&p)["status"], "ok");
}

#[test]
fn sigkill_of_cbound_takes_the_direct_child_along() {
    let p = Project::new();
    p.write("slow.yaml", &pipeline(p.path(), ""));
    let mut cleanup = start(&p);
    let leader = read_pid(&p.path().join("leader.pid")).unwrap();
    cleanup.cbound.as_mut().unwrap().kill().unwrap(); // SIGKILL: cbound cannot react
    let _ = exit_of(&mut cleanup, Duration::from_secs(10));
    // PR_SET_PDEATHSIG: the kernel SIGKILLs the program when cbound dies. What the program
    // started itself (the background sleep) is outside that; Cleanup kills the group.
    assert!(
        wait_until(Duration::from_secs(5), || dead(leader)),
        "the program {leader} outlived a SIGKILLed cbound"
    );
}

/// The Slurm config tests/slurm/start.sh renders, when SLURM_CONF does not name one.
fn slurm_conf() -> Option<String> {
    std::env::var("SLURM_CONF").ok().or_else(|| {
        Path::new("/tmp/cbound-slurm/slurm.conf")
            .exists()
            .then(|| "/tmp/cbound-slurm/slurm.conf".into())
    })
}

fn slurm_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    if let Some(conf) = slurm_conf() {
        cmd.env("SLURM_CONF", conf);
    }
    cmd
}

/// Whether a Slurm cluster answers (as in tests/slurm.rs, CBOUND_SLURM=required makes a
/// missing one a failure).
fn slurm_cluster() -> bool {
    let up = slurm_command("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|s| matches!(s.trim(), "idle" | "mixed" | "allocated"))
        });
    if !up {
        assert!(
            std::env::var("CBOUND_SLURM").as_deref() != Ok("required"),
            "CBOUND_SLURM=required: no Slurm cluster answers (sinfo)"
        );
        eprintln!("skipping Slurm test: no Slurm cluster answers (sinfo)");
    }
    up
}

fn slurm_jobs(pipeline: &str) -> Vec<String> {
    let out = slurm_command("squeue")
        .args(["-h", "-o", "%i|%j|%T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("|cbound:{pipeline}:")))
        .map(String::from)
        .collect()
}

#[test]
fn sigterm_cancels_every_submitted_slurm_job() {
    if !slurm_cluster() {
        return;
    }
    let p = Project::new();
    p.write(
        "sleepy.yaml",
        "name: slurm-term\nstages:\n  nap:\n    kind: command\n    matrix: {env.X: [\"1\", \"2\", \"3\"]}\n    params: {argv: [sleep, \"120\"]}\n",
    );
    let stderr = std::fs::File::create(p.path().join("cbound.err")).unwrap();
    let mut command = p.command(&[
        "run",
        "sleepy.yaml",
        "--executor",
        "slurm",
        "--progress",
        "lines",
    ]);
    if let Some(conf) = slurm_conf() {
        command.env("SLURM_CONF", conf);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut cleanup = Cleanup {
        dir: p.path().to_path_buf(),
        cbound: Some(child),
    };
    let running = wait_until(Duration::from_secs(60), || {
        slurm_jobs("slurm-term")
            .iter()
            .any(|l| l.ends_with("|RUNNING"))
    });
    assert!(running, "no task started:\n{}", stderr_of(&p));
    send(cleanup.cbound.as_ref().unwrap(), "-TERM");
    let status = exit_of(&mut cleanup, Duration::from_secs(90));
    let stderr = stderr_of(&p);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("terminated (SIGTERM): cancelling the submitted Slurm jobs"),
        "{stderr}"
    );
    assert_eq!(slurm_jobs("slurm-term"), Vec::<String>::new());
    assert_eq!(run_json_of(&p, "slurm-term")["status"], "terminated");
}
