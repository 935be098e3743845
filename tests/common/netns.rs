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

/// Two hosts, each behind its own NAT, and a public network between the NATs:
///
/// ```text
/// host_a 192.168.S.2 ─ nat_a (MASQUERADE) 10.P.1.2 ─┐
///                                                   pub 10.P.1.1 / 10.P.2.1 (routes between)
/// host_b 192.168.T.2 ─ nat_b (MASQUERADE) 10.P.2.2 ─┘
/// ```
///
/// Each NAT drops unsolicited inbound packets (port-restricted cone: MASQUERADE keeps the source
/// port when it can). With `symmetric_b`, B's NAT maps every new destination to a random port
/// (`--random`), which defeats hole punching. Needs iptables (test.sh installs it).
pub struct NatLab {
    pub public: String,
    pub nat_a: String,
    pub host_a: String,
    pub nat_b: String,
    pub host_b: String,
    /// `pub`'s address on A's side, where the tracker listens.
    pub public_ip: String,
    /// The NATs' public addresses.
    pub nat_a_ip: String,
    pub nat_b_ip: String,
}

impl NatLab {
    pub fn new(symmetric_b: bool) -> Self {
        let id = short_id();
        let name = |n: &str| format!("px{id:06x}-{n}");
        let p = 100 + id % 100;
        let lab = Self {
            public: name("pub"),
            nat_a: name("nata"),
            host_a: name("hosta"),
            nat_b: name("natb"),
            host_b: name("hostb"),
            public_ip: format!("10.{p}.1.1"),
            nat_a_ip: format!("10.{p}.1.2"),
            nat_b_ip: format!("10.{p}.2.2"),
        };
        for ns in lab.all() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let link = |ns1: &str, dev1: &str, addr1: &str, ns2: &str, dev2: &str, addr2: &str| {
            ip(&["link", "add", dev1, "netns", ns1, "type", "veth", "peer", "name", dev2, "netns", ns2]);
            for (ns, dev, addr) in [(ns1, dev1, addr1), (ns2, dev2, addr2)] {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
                ip(&["-n", ns, "link", "set", dev, "up"]);
            }
        };
        let v = |n: &str| format!("v{id:06x}{n}");
        link(&lab.public, &v("pa"), &format!("10.{p}.1.1/24"), &lab.nat_a, &v("ao"), &format!("10.{p}.1.2/24"));
        link(&lab.public, &v("pb"), &format!("10.{p}.2.1/24"), &lab.nat_b, &v("bo"), &format!("10.{p}.2.2/24"));
        link(
            &lab.nat_a,
            &v("ai"),
            &format!("192.168.{}.1/24", id % 200),
            &lab.host_a,
            &v("ah"),
            &format!("192.168.{}.2/24", id % 200),
        );
        link(
            &lab.nat_b,
            &v("bi"),
            &format!("192.168.{}.1/24", id % 200 + 1),
            &lab.host_b,
            &v("bh"),
            &format!("192.168.{}.2/24", id % 200 + 1),
        );
        ip(&["-n", &lab.nat_a, "route", "add", "default", "via", &format!("10.{p}.1.1")]);
        ip(&["-n", &lab.nat_b, "route", "add", "default", "via", &format!("10.{p}.2.1")]);
        ip(&["-n", &lab.host_a, "route", "add", "default", "via", &format!("192.168.{}.1", id % 200)]);
        ip(&["-n", &lab.host_b, "route", "add", "default", "via", &format!("192.168.{}.1", id % 200 + 1)]);
        for (ns, out, random) in [(&lab.nat_a, v("ao"), false), (&lab.nat_b, v("bo"), symmetric_b)] {
            exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let mut masq = vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", &out, "-j", "MASQUERADE"];
            if random {
                masq.push("--random");
            }
            exec(ns, &masq);
            // Unsolicited packets are dropped, not refused, forwarded or not: a home router is silent,
            // and a hole punch's first SYN, arriving before the other side's, must not be reset.
            for chain in ["FORWARD", "INPUT"] {
                let established = "ESTABLISHED,RELATED";
                exec(
                    ns,
                    &["iptables", "-A", chain, "-i", &out, "-m", "conntrack", "--ctstate", established, "-j", "ACCEPT"],
                );
                exec(ns, &["iptables", "-A", chain, "-i", &out, "-j", "DROP"]);
            }
        }
        exec(&lab.public, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab
    }

    fn all(&self) -> [&String; 5] {
        [&self.public, &self.nat_a, &self.host_a, &self.nat_b, &self.host_b]
    }

    /// `ip netns exec NS`.
    pub fn exec(&self, ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.to_owned()]
    }
}

/// Runs `cmd` inside namespace `ns`, panicking on failure.
pub fn exec(ns: &str, cmd: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().unwrap();
    assert!(out.status.success(), "{ns}: {}: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
