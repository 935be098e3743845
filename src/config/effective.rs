//! The configuration a daemon would run with, written back as a config file: what
//! `peerix serve --print-config` shows after flags, `PEERIX_*` variables, the file and the defaults
//! have been merged and checked. The NixOS module's tests run the real parser this way on every
//! command line the module can build, and an operator sees what a unit's flags amount to.

use super::units::{format_duration, format_size};
use super::{FileConfig, ServeConfig};
use crate::substitute::Fallback;

impl ServeConfig {
    /// The keys [`Self::effective`] leaves out because they are unset, each as a commented line
    /// saying what unset means, so `--print-config` shows every key.
    pub fn unset_keys(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.private_key_file.is_none() {
            out.push("# private-key-file = \"/var/lib/peerix/secret\"   # unset: no signature of ours is added");
        }
        if self.index_rate.is_none() {
            out.push("# index-rate = \"256M\"   # unset: 256M for serve, no cap for publish");
        }
        if self.tracker.is_none() {
            out.push("# tracker = \"http://tracker.example:12305\"   # unset: no tracker");
        }
        out
    }

    /// Every key set, as the TOML file spells it; loading the result gives the same configuration.
    pub fn effective(&self) -> FileConfig {
        let strings = |v: &[libp2p::Multiaddr]| Some(v.iter().map(ToString::to_string).collect::<Vec<_>>());
        let p2p = self.p2p.as_ref();
        FileConfig {
            listen: Some(self.listen),
            state_dir: Some(self.state_dir.clone()),
            store_root: Some(self.store_root.clone()),
            priority: Some(self.priority),
            trusted_public_keys: Some(self.trusted_keys.iter().map(ToString::to_string).collect()),
            // "none" turns the upstream off; an absent key would mean cache.nixos.org.
            upstream: Some(self.upstream.clone().unwrap_or_else(|| "none".to_owned())),
            upstream_negative_ttl: Some(self.upstream_negative_ttl.as_secs()),
            serve_private: Some(self.serve_private),
            private_key_file: self.private_key_file.clone(),
            index_jobs: Some(self.index_jobs),
            // Unset means "the subcommand's default" (256M for serve, none for publish).
            index_rate: self.index_rate.map(format_size),
            cache_size: Some(format_size(self.cache_size)),
            p2p_listen: p2p.and_then(|p| strings(&p.listen)),
            // An empty list in the file would mean "the public bootstrap peers".
            bootstrap: p2p.map(|p| {
                if p.bootstrap.is_empty() { vec!["none".to_owned()] } else { strings(&p.bootstrap).unwrap_or_default() }
            }),
            mode: p2p.map(|p| p.mode),
            mdns: p2p.map(|p| p.mdns),
            external_addresses: p2p.and_then(|p| strings(&p.external)),
            provide_rate: p2p.map(|p| p.provide_rate),
            dht_server: p2p.map(|p| p.dht_server),
            p2p: Some(p2p.is_some()),
            peers: p2p.and_then(|p| strings(&p.peers)),
            lookup_timeout: Some(format_duration(self.lookup_timeout)),
            prefetch_size: Some(format_size(self.prefetch.bytes)),
            prefetch_age: Some(format_duration(self.prefetch.age)),
            fallbacks: Some(self.fallbacks.iter().map(Fallback::to_config).collect()),
            tracker: self.tracker.clone(),
            relays: p2p.and_then(|p| strings(&p.relays)),
            upnp: p2p.map(|p| p.upnp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::nix::signing::SecretKey;

    /// Writing the effective configuration and loading it back changes nothing, defaults included.
    #[test]
    fn the_effective_configuration_loads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.sk");
        let secret = SecretKey::generate("peerix-test-1").unwrap();
        std::fs::write(&key, secret.to_nix_string()).unwrap();
        for args in [
            ServeArgs { state_dir: Some(dir.path().into()), ..Default::default() },
            ServeArgs {
                state_dir: Some(dir.path().into()),
                mode: Some(crate::p2p::Mode::Lan),
                upstream: Some("none".into()),
                private_key_file: Some(key.clone()),
                fallbacks: vec!["kubo+http://127.0.0.1:5001".into(), "https://gw.example".into()],
                peers: vec!["/ip4/10.0.0.2/tcp/12306/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()],
                index_rate: Some("0".into()),
                lookup_timeout: Some("1s".into()),
                no_mdns: true,
                ..Default::default()
            },
            ServeArgs { state_dir: Some(dir.path().into()), no_p2p: true, ..Default::default() },
        ] {
            let first = ServeConfig::resolve(args).unwrap().effective();
            let text = toml::to_string(&first).unwrap();
            let again = ServeConfig::merge(ServeArgs::default(), FileConfig::parse(&text, dir.path()).unwrap())
                .unwrap()
                .effective();
            assert_eq!(text, toml::to_string(&again).unwrap());
        }
    }
}
