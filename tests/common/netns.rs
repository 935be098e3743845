//! Network namespaces a test creates and deletes itself (root needed, as in CI): a two-host LAN
//! joined by a veth pair, or one host with nothing but loopback. Names are unique per process and
//! call (a stale namespace of an earlier run can never be taken for ours), and everything is
//! deleted when the value is dropped — on success, on a failed assertion, on a panic.

use std::process::Command;

use super::nonce;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A short id unique to this call: interface names are limited to 15 bytes.
fn short_id() -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(nonce().as_bytes());
    u32::from_le_bytes([d[0], d[1], d[2], 0])
}

/// Two namespaces and a veth pair between them.
pub struct Lan {
    pub a: String,
    pub b: String,
    pub ip_a: String,
    pub ip_b: String,
    /// The /24 both are on, as `10.x.y.` (addresses start with it).
    pub prefix: String,
}

impl Lan {
    pub fn new() -> Self {
        let id = short_id();
        let (a, b) = (format!("peerix-{id:06x}-a"), format!("peerix-{id:06x}-b"));
        let (va, vb) = (format!("pxa{id:06x}"), format!("pxb{id:06x}"));
        let prefix = format!("10.{}.{}.", 200 + id % 50, (id >> 8) % 250);
        let lan = Self { a: a.clone(), b: b.clone(), ip_a: format!("{prefix}1"), ip_b: format!("{prefix}2"), prefix };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b]);
        for (ns, dev, addr) in [(&a, &va, &lan.ip_a), (&b, &vb, &lan.ip_b)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        lan
    }

    /// `ip netns exec NS`: the prefix that runs a command inside `ns`.
    pub fn exec(&self, ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.to_owned()]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One namespace with only loopback up: a connection to anywhere else fails at once ("Network is
/// unreachable"), so nothing a daemon in it tries can leave the machine.
pub struct Isolated {
    pub name: String,
}

impl Isolated {
    pub fn new() -> Self {
        let name = format!("peerix-{:06x}-iso", short_id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn exec(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()]
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
