//! A real three-master Redis Cluster for the tests, started privately on loopback ports.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fleet::{now_ms, poll};
use super::run_timeout;

/// A three-master Redis Cluster on loopback ports, no persistence. Every server is killed on
/// drop, also when the test fails.
pub struct Cluster {
    pub nodes: Vec<(u16, Child)>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ttc")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        let mut seed = now_ms() ^ ((std::process::id() as u64) << 20);
        for _ in 0..3 {
            cluster.start_node(&mut seed);
        }
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = Command::new("redis-cli");
        create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null());
        let out = run_timeout(create, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for port in cluster.ports() {
            poll(
                "cluster_state:ok",
                Duration::from_secs(20),
                Duration::from_millis(100),
                || {
                    let info = cluster.cli(port, &["cluster", "info"]);
                    if info.contains("cluster_state:ok") {
                        Ok(())
                    } else {
                        Err(format!("node {port}: {info}"))
                    }
                },
            );
        }
        cluster
    }

    /// Starts one node on a free port P whose cluster bus port P+10000 is free too.
    pub fn start_node(&mut self, seed: &mut u64) {
        for _ in 0..20 {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let port = 20_000 + ((*seed >> 33) % 25_000) as u16;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if self.ports().contains(&port) || !free(port) || !free(port + 10_000) {
                continue;
            }
            let node_dir = self.dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let log = File::create(node_dir.join("redis.log")).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--appendonly", "no", "--save", "", "--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting redis-server");
            self.nodes.push((port, child));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, child) = self.nodes.last_mut().unwrap();
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken after all; try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return;
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let (_, mut child) = self.nodes.pop().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a cluster node on a free port");
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[0].0)
    }

    /// `redis-cli -c -p PORT args…`; its trimmed output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        c.args(["-c", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null());
        let out = run_timeout(c, Duration::from_secs(10));
        assert!(
            out.status.success(),
            "redis-cli -p {port} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
