//! CI smoke test of `plg-sim bench`: the real binary, a node in its own process, a few
//! sessions through billing + QUIC, short phases. It fails only on gross regressions (the
//! PLG path losing packets at a low rate, or the harness not running) — never on timing.

use std::process::Command;

#[test]
fn bench_quick_runs_and_the_plg_path_does_not_lose_packets() {
    let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
        .args([
            "bench",
            "--quick",
            "--no-nginx",
            "--sessions",
            "20",
            "--seconds",
            "0.3",
        ])
        .output()
        .expect("running plg-sim bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plg-sim bench --quick failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("| PLG node |"), "no PLG row:\n{stdout}");
    assert!(stdout.contains("| direct |"), "no direct row:\n{stdout}");
}
