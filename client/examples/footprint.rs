//! Footprint of the real `plg` client while connected: binary size, resident memory and CPU
//! at a game's packet rate, next to a baseline (a minimal tokio UDP forwarder process carrying
//! the same traffic). Billing, a relay node and an echo game server run in this process; `plg`
//! and the forwarder are child processes, measured from /proc (Linux only).
//!
//! ```text
//! cargo build --release -p plg-client --example footprint --bin plg
//! target/release/examples/footprint --seconds 20
//! ```
//! Options: `--rate 128` (packets/s each way), `--seconds 20` (per measurement), `--plg PATH`
//! (default: the `plg` next to the `examples/` folder). Figures: docs/benchmarks.md.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the footprint benchmark reads /proc: run it on Linux");
}

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("forward") {
        // Child mode (the baseline): a plain UDP forwarder to the given address.
        let to = args.next().unwrap_or_default().parse()?;
        return linux::forwarder(to);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(linux::main())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use tokio::net::UdpSocket;
    use tokio::time::Instant;

    struct Args {
        plg: PathBuf,
        rate: u32,
        seconds: u64,
    }

    fn args() -> Result<Args> {
        let mut a = std::env::args().skip(1);
        // target/<profile>/examples/footprint → target/<profile>/plg
        let exe = std::env::current_exe()?;
        let mut out = Args {
            plg: exe
                .parent()
                .and_then(Path::parent)
                .context("exe path")?
                .join("plg"),
            rate: 128,
            seconds: 20,
        };
        while let Some(k) = a.next() {
            let v = a.next().with_context(|| format!("{k} needs a value"))?;
            match k.as_str() {
                "--plg" => out.plg = v.into(),
                "--rate" => out.rate = v.parse()?,
                "--seconds" => out.seconds = v.parse()?,
                _ => bail!("unknown option {k}"),
            }
        }
        Ok(out)
    }

    /// The baseline: the simplest forwarder for one game client (a socket each side, no
    /// sealing, no session): the least any capture-and-relay client process costs.
    pub(super) fn forwarder(to: SocketAddr) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let front = UdpSocket::bind("127.0.0.1:0").await?;
            let back = UdpSocket::bind("127.0.0.1:0").await?;
            back.connect(to).await?;
            println!("forwarding {}", front.local_addr()?);
            std::io::stdout().flush()?;
            let mut client: Option<SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let (n, from) = r?;
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    }
                    r = back.recv(&mut b) => {
                        let n = r?;
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                }
            }
        })
    }

    fn clk_tck() -> f64 {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    }

    /// utime + stime of `pid`, in clock ticks.
    fn cpu_ticks(pid: u32) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    }

    /// (VmRSS, VmHWM) of `pid` in kB.
    fn memory_kb(pid: u32) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let get = |key: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("{key} missing"))?;
            Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
        };
        Ok((get("VmRSS:")?, get("VmHWM:")?))
    }

    struct Measured {
        rss_mb: f64,
        peak_mb: f64,
        cpu_percent: f64,
        sent: u64,
        back: u64,
    }

    /// Drives `rate` packets/s (100–300 bytes) through `via` for `seconds`, sampling `pid`.
    async fn measure(
        pid: u32,
        via: Option<SocketAddr>,
        rate: u32,
        seconds: u64,
    ) -> Result<Measured> {
        let tck = clk_tck();
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        if let Some(v) = via {
            socket.connect(v).await?;
        }
        let interval = Duration::from_secs(1) / rate.max(1);
        let start = Instant::now();
        let ticks0 = cpu_ticks(pid)?;
        let (mut sent, mut back, mut rss_max) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; 2048];
        let mut sample = tokio::time::interval(Duration::from_millis(500));
        let end = start + Duration::from_secs(seconds);
        loop {
            let next = start + interval * sent as u32;
            tokio::select! {
                _ = tokio::time::sleep_until(next), if via.is_some() && next < end => {
                    let len = 100 + (sent as usize * 7919) % 201;
                    let _ = socket.send(&vec![0x5a; len]).await;
                    sent += 1;
                }
                r = socket.recv(&mut buf), if via.is_some() => {
                    if r.is_ok() { back += 1; }
                }
                _ = sample.tick() => {
                    rss_max = rss_max.max(memory_kb(pid)?.0);
                    if Instant::now() >= end { break; }
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid)? - ticks0;
        let (_, hwm) = memory_kb(pid)?;
        Ok(Measured {
            rss_mb: rss_max as f64 / 1024.0,
            peak_mb: hwm as f64 / 1024.0,
            cpu_percent: 100.0 * ticks as f64 / tck / elapsed,
            sent,
            back,
        })
    }

    struct Reader {
        child: Child,
        lines: std::sync::mpsc::Receiver<String>,
    }

    impl Reader {
        fn spawn(cmd: &mut Command) -> Result<Reader> {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let out = child.stdout.take().context("stdout")?;
            let (tx, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            Ok(Reader { child, lines })
        }

        fn wait_for(&self, needle: &str) -> Result<String> {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match self.lines.recv_timeout(left) {
                    Ok(l) if l.contains(needle) => return Ok(l),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            bail!("never printed {needle:?}")
        }
    }

    impl Drop for Reader {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn row(what: &str, m: &Measured) {
        println!(
            "{what:<34} {:>8.1} {:>8.1} {:>8.2} {:>8} {:>8}",
            m.rss_mb, m.peak_mb, m.cpu_percent, m.sent, m.back
        );
    }

    pub(super) async fn main() -> Result<()> {
        let a = args()?;
        if !a.plg.exists() {
            bail!(
                "{} is missing: build it first (cargo build --release -p plg-client --bin plg)",
                a.plg.display()
            );
        }
        let dir = tempfile::tempdir()?;
        // Echo game server.
        let echo = UdpSocket::bind("127.0.0.1:0").await?;
        let game = echo.local_addr()?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        // Billing and one node, in this process (not measured).
        let config = plg_billing::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join("billing"),
            extra_games: vec![plg_billing::games::GameSeed {
                slug: "demo".into(),
                name: "Demo".into(),
                destinations: vec![format!("127.0.0.1/32:{}", game.port()).parse()?],
                process_names: vec![],
                ..Default::default()
            }],
            ..plg_billing::Config::default()
        };
        let billing = plg_billing::Billing::open(config).await?;
        let listener = billing.bind().await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(
            billing
                .clone()
                .serve(listener, std::future::pending::<()>()),
        );
        let token = billing.create_join_token(Duration::from_secs(600)).await?;
        let identity = plg_node::join(
            &url,
            &token,
            "bench-node",
            "local",
            &dir.path().join("node"),
        )
        .await?;
        let node = plg_node::start(
            identity,
            plg_node::NodeConfig {
                control_listen: "127.0.0.1:0".parse()?,
                data_listen: "127.0.0.1:0".parse()?,
                allow_private_destinations: true,
                ..plg_node::NodeConfig::default()
            },
        )
        .await?;

        let cfg_dir = dir.path().join("plg");
        let mut login = Command::new(&a.plg)
            .args([
                "login",
                "--billing",
                &url,
                "--email",
                "footprint@example.com",
            ])
            .args(["--register", "--password-stdin"])
            .env("PLG_CONFIG_DIR", &cfg_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        login
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"a long enough password\n")?;
        if !login.wait()?.success() {
            bail!("plg login failed");
        }

        let connect = Reader::spawn(
            Command::new(&a.plg)
                .args(["connect", "demo", "--plain", "--proxy", "127.0.0.1:0"])
                .args(["--to", &game.to_string()])
                .env("PLG_CONFIG_DIR", &cfg_dir),
        )?;
        let line = connect.wait_for("point the game at")?;
        let proxy: SocketAddr = line
            .split_whitespace()
            .nth(4)
            .context("proxy address")?
            .parse()?;
        let pid = connect.child.id();

        let fwd = Reader::spawn(
            Command::new(std::env::current_exe()?).args(["forward", &game.to_string()]),
        )?;
        let fwd_addr: SocketAddr = fwd
            .wait_for("forwarding")?
            .split_whitespace()
            .nth(1)
            .context("forwarder address")?
            .parse()?;

        let size = std::fs::metadata(&a.plg)?.len();
        let stripped = dir.path().join("plg-stripped");
        let stripped_size = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&a.plg)
            .status()
            .ok()
            .filter(|s| s.success())
            .and_then(|_| std::fs::metadata(&stripped).ok())
            .map(|m| m.len());

        println!(
            "plg client footprint: {} packets/s each way (100–300 bytes), {} s per row; node, billing and the echo server run in the benchmark process\n",
            a.rate, a.seconds
        );
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "process", "rss MB", "peak MB", "cpu %", "sent", "back"
        );
        // Warm-up: first flow, first pings.
        measure(pid, Some(proxy), a.rate, 2).await?;
        let idle = measure(pid, None, a.rate, a.seconds.min(10)).await?;
        row("plg connect, connected, no traffic", &idle);
        let busy = measure(pid, Some(proxy), a.rate, a.seconds).await?;
        row(&format!("plg connect, {} packets/s", a.rate), &busy);
        measure(fwd.child.id(), Some(fwd_addr), a.rate, 2).await?;
        let base = measure(fwd.child.id(), Some(fwd_addr), a.rate, a.seconds).await?;
        row(
            &format!("baseline: tokio UDP forwarder, {}/s", a.rate),
            &base,
        );
        println!(
            "\nbinary {}: {:.1} MB{}",
            a.plg.display(),
            size as f64 / 1e6,
            stripped_size
                .map(|s| format!(" ({:.1} MB stripped)", s as f64 / 1e6))
                .unwrap_or_default()
        );
        drop(connect);
        drop(fwd);
        node.shutdown().await;
        billing.close().await;
        Ok(())
    }
}
