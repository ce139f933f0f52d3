//! Running a benchmark's process: the JSON result it prints last, within a time limit, and
//! the most memory it held (shared by `cargo xtask bench` and its memory and quantized-base
//! benches).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs `command` and parses the last line of its stdout as JSON.
pub(crate) fn json_line(command: &mut Command, what: &str) -> Result<Value> {
    json_line_within(command, what, None)
}

/// [`json_line`], but a command still running after `limit` is stopped, and the error says
/// how far its memory had reached (its VmHWM) by then: a peer whose step takes hours on
/// this machine still gives a lower bound instead of holding the bench.
pub(crate) fn json_line_within(
    command: &mut Command,
    what: &str,
    limit: Option<Duration>,
) -> Result<Value> {
    eprintln!("$ {what}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    // Read both pipes while it runs, so that a full pipe never blocks it.
    let stdout = read_to_end_in_background(child.stdout.take());
    let stderr = read_to_end_in_background(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(limit) = limit
            && started.elapsed() >= limit
        {
            let high_water = high_water_mib(child.id());
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "stopped after {:.0} min, its high-water mark then {}",
                limit.as_secs_f64() / 60.0,
                high_water.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"))
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}):\n{stderr}");
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}, not JSON"))
}

/// All of `pipe` as text, read on a thread of its own.
fn read_to_end_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The most resident memory process `pid` has held (Linux's VmHWM), in MiB.
fn high_water_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_limit_is_stopped_with_its_high_water_mark() {
        let started = Instant::now();
        let mut slow = Command::new("sh");
        slow.args(["-c", "sleep 30; echo '{}'"]);
        let error = json_line_within(&mut slow, "sleep", Some(Duration::from_millis(300)))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("stopped after 0 min"), "{error}");
        assert!(error.ends_with(" MiB"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it was not killed"
        );

        let mut quick = Command::new("sh");
        quick.args([
            "-c",
            "echo progress >&2; echo 'not json'; echo '{\"seconds\": 1.5}'",
        ]);
        let value = json_line_within(&mut quick, "echo", Some(Duration::from_secs(60))).unwrap();
        assert_eq!(value["seconds"], 1.5);

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo 'the reason' >&2; exit 3"]);
        let error = format!("{:#}", json_line(&mut failing, "fail").unwrap_err());
        assert!(error.contains("the reason"), "{error}");
    }
}
