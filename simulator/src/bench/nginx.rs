//! nginx's UDP `stream` proxy as the peer to beat: the harness writes a configuration into a
//! temporary directory and runs nginx on loopback in front of the same echo server.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::load::SOCKET_BUFFER;
use super::procfs;

/// Where Debian's `libnginx-mod-stream` installs the module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The nginx binary, if nginx and its stream module are installed.
pub(crate) fn find() -> Result<PathBuf, String> {
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("nginx is not installed (apt-get install nginx libnginx-mod-stream)")?;
    if !Path::new(STREAM_MODULE).exists() {
        return Err(format!(
            "{STREAM_MODULE} is missing (apt-get install libnginx-mod-stream)"
        ));
    }
    Ok(bin)
}

/// The configuration the harness runs: `workers` worker processes, one `reuseport` UDP
/// listener, one upstream socket per client address (nginx's UDP session), one reply expected
/// per request as a game would not, but as the echo does (`proxy_responses 1`).
pub(crate) fn config(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    workers: usize,
) -> String {
    format!(
        "# Written by `plg-sim bench`.\n\
         load_module {STREAM_MODULE};\n\
         worker_processes {workers};\n\
         worker_rlimit_nofile 65536;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{\n    worker_connections 16384;\n}}\n\
         stream {{\n\
         \x20   server {{\n\
         \x20       listen {listen} udp reuseport rcvbuf={SOCKET_BUFFER} sndbuf={SOCKET_BUFFER};\n\
         \x20       proxy_pass {upstream};\n\
         \x20       proxy_responses 1;\n\
         \x20       proxy_timeout 60s;\n\
         \x20   }}\n\
         }}\n",
        dir = dir.display(),
    )
}

/// A running nginx.
#[derive(Debug)]
pub(crate) struct Nginx {
    /// The proxy's UDP address.
    pub addr: SocketAddr,
    /// Worker processes configured.
    pub workers: usize,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Writes the configuration and starts nginx in front of `upstream`.
    pub(crate) fn start(bin: &Path, upstream: SocketAddr, workers: usize) -> Result<Nginx> {
        let dir = tempfile::tempdir()?;
        // A port the kernel just handed out; nginx binds it right after (a tiny race).
        let addr = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, upstream, workers))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Nginx {
            addr,
            workers,
            child,
            _dir: dir,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {log}");
            }
            probe.send_to(b"ready?", self.addr)?;
            if probe.recv(&mut buf).is_ok() && self.worker_pids().len() == self.workers {
                return Ok(());
            }
        }
        bail!("nginx did not answer on {} within 10 s", self.addr)
    }

    /// The master's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Worker pids.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        procfs::children(self.pid())
    }

    /// CPU time of the master and its workers.
    pub(crate) fn cpu_ns(&self) -> u64 {
        procfs::process_cpu_ns(self.pid())
            + self
                .worker_pids()
                .into_iter()
                .map(procfs::process_cpu_ns)
                .sum::<u64>()
    }

    /// Resident memory of the master and its workers, KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid())
            + self
                .worker_pids()
                .into_iter()
                .map(procfs::rss_kib)
                .sum::<u64>()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // SIGTERM: fast shutdown of master and workers (SIGKILL would orphan the workers).
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_stream_module_and_reuseport() {
        let c = config(
            Path::new("/tmp/x"),
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            1,
        );
        assert!(c.contains("load_module /usr/lib/nginx/modules/ngx_stream_module.so;"));
        assert!(c.contains("listen 127.0.0.1:4000 udp reuseport"));
        assert!(c.contains("proxy_pass 127.0.0.1:5000;"));
        assert!(c.contains("proxy_responses 1;"));
        assert!(c.contains("worker_processes 1;"));
    }
}
