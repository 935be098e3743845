//! The `.narinfo` text format: parse (upstream's and peers' answers) and render (ours).
//!
//! Rules Nix enforces and we therefore enforce on both sides (`src/libstore/nar-info.cc`): `Key: Value`
//! lines, each ending in `\n` (CRLF breaks Nix's parser); `StorePath`, `URL`, `NarHash` and a non-zero
//! `NarSize` are required; `References` holds base names; a missing `Compression` means bzip2, so we
//! always write it. Unknown keys are ignored, as Nix does.

use std::fmt::Write as _;

use super::hash::NarHash;
use super::signing;
use super::store_path::StorePath;

/// A narinfo is a few hundred bytes; a 64 KiB cap bounds what we read from a peer or upstream
/// (a path with ~1000 references is ≈ 50 KiB).
pub const MAX_NARINFO_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("narinfo is larger than 64 KiB")]
    TooLarge,
    #[error("narinfo does not end in a newline")]
    NoTrailingNewline,
    #[error("narinfo line {0} is not of the form 'Key: Value'")]
    Line(usize),
    #[error("narinfo has no {0} field")]
    Missing(&'static str),
    #[error("narinfo field {0} is malformed")]
    Field(&'static str),
    #[error("narinfo field {0} appears twice")]
    Duplicate(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    pub url: String,
    pub compression: String,
    pub file_hash: Option<String>,
    pub file_size: Option<u64>,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    /// Base name of the deriver, if known.
    pub deriver: Option<String>,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

impl NarInfo {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_NARINFO_LEN {
            return Err(ParseError::TooLarge);
        }
        if !text.ends_with('\n') {
            return Err(ParseError::NoTrailingNewline);
        }
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;

        fn set<T>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), ParseError> {
            if slot.replace(value).is_some() {
                return Err(ParseError::Duplicate(key));
            }
            Ok(())
        }

        for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
            let (key, value) = line.split_once(": ").ok_or(ParseError::Line(i + 1))?;
            match key {
                "StorePath" => set(
                    &mut store_path,
                    StorePath::parse(value).map_err(|_| ParseError::Field("StorePath"))?,
                    "StorePath",
                )?,
                "URL" if !value.is_empty() => set(&mut url, value.to_owned(), "URL")?,
                "URL" => return Err(ParseError::Field("URL")),
                "Compression" => set(&mut compression, value.to_owned(), "Compression")?,
                "FileHash" => set(&mut file_hash, value.to_owned(), "FileHash")?,
                "FileSize" => {
                    set(&mut file_size, value.parse().map_err(|_| ParseError::Field("FileSize"))?, "FileSize")?
                }
                "NarHash" => {
                    set(&mut nar_hash, NarHash::parse(value).map_err(|_| ParseError::Field("NarHash"))?, "NarHash")?
                }
                "NarSize" => {
                    set(&mut nar_size, value.parse::<u64>().map_err(|_| ParseError::Field("NarSize"))?, "NarSize")?
                }
                "References" => {
                    let refs = value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(StorePath::from_base_name)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| ParseError::Field("References"))?;
                    set(&mut references, refs, "References")?
                }
                "Deriver" if value != "unknown-deriver" => set(&mut deriver, value.to_owned(), "Deriver")?,
                "Sig" => sigs.push(value.to_owned()),
                "CA" => set(&mut ca, value.to_owned(), "CA")?,
                _ => {}
            }
        }
        let nar_size = nar_size.ok_or(ParseError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(ParseError::Field("NarSize"));
        }
        Ok(Self {
            store_path: store_path.ok_or(ParseError::Missing("StorePath"))?,
            url: url.ok_or(ParseError::Missing("URL"))?,
            compression: compression.filter(|c| !c.is_empty()).unwrap_or_else(|| "bzip2".into()),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(ParseError::Missing("NarHash"))?,
            nar_size,
            references: references.unwrap_or_default(),
            deriver,
            sigs,
            ca,
        })
    }

    /// The text Nix reads; every line ends in `\n`, `References` is always written (empty when none),
    /// `Compression` is always written.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(512 + 64 * (self.references.len() + self.sigs.len()));
        // Writing to a String cannot fail.
        let _ = writeln!(out, "StorePath: {}", self.store_path);
        let _ = writeln!(out, "URL: {}", self.url);
        let _ = writeln!(out, "Compression: {}", self.compression);
        if let Some(h) = &self.file_hash {
            let _ = writeln!(out, "FileHash: {h}");
        }
        if let Some(s) = self.file_size {
            let _ = writeln!(out, "FileSize: {s}");
        }
        let _ = writeln!(out, "NarHash: {}", self.nar_hash);
        let _ = writeln!(out, "NarSize: {}", self.nar_size);
        out.push_str("References:");
        for r in &self.references {
            out.push(' ');
            out.push_str(r.base_name());
        }
        if self.references.is_empty() {
            out.push(' ');
        }
        out.push('\n');
        if let Some(d) = &self.deriver {
            let _ = writeln!(out, "Deriver: {d}");
        }
        for s in &self.sigs {
            let _ = writeln!(out, "Sig: {s}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(out, "CA: {ca}");
        }
        out
    }

    pub fn fingerprint(&self) -> String {
        signing::fingerprint(&self.store_path, &self.nar_hash.to_string(), self.nar_size, &self.references)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from `nix copy --to file://…?compression=none` (nix-client-here.md §4).
    const REAL: &str = "StorePath: /nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs
URL: nar/1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f.nar
Compression: none
FileHash: sha256:1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f
FileSize: 792
NarHash: sha256:1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f
NarSize: 792
References: 4mspmnyqbg8wgv51qfcjppav6w9x9zfw-hello-out
Deriver: 8xwggyrx09ckybw7160lqc5lvfn3kpb6-with-refs.drv
Sig: test1:W3XrHvMHL+euCWu9qO70z2D0pHcRUeBv4xyS6rm3KWCjbf06s6G8ci40xHPVpDlhJTEyZ8NnjzeQ+4XAzfMhBg==
";

    #[test]
    fn parse_render_roundtrip_is_exact() {
        let info = NarInfo::parse(REAL).unwrap();
        assert_eq!(info.render(), REAL);
        assert_eq!(info.references.len(), 1);
        let pk = signing::PublicKey::parse("test1:bIaRPL6uuzV+ejRATqJRADAMeGZd68iYCdkypnRHOlE=").unwrap();
        assert!(pk.verifies(&info.fingerprint(), &info.sigs[0]));
    }

    #[test]
    fn empty_references_line_has_trailing_space() {
        let mut info = NarInfo::parse(REAL).unwrap();
        info.references.clear();
        assert!(info.render().contains("\nReferences: \n"));
        assert_eq!(NarInfo::parse(&info.render()).unwrap(), info);
    }

    #[test]
    fn rejects_what_nix_rejects() {
        assert_eq!(NarInfo::parse(REAL.trim_end()), Err(ParseError::NoTrailingNewline));
        assert_eq!(NarInfo::parse(&REAL.replace("NarSize: 792", "NarSize: 0")), Err(ParseError::Field("NarSize")));
        assert_eq!(NarInfo::parse(&REAL.replace("NarSize: 792\n", "")), Err(ParseError::Missing("NarSize")));
        assert!(NarInfo::parse(&REAL.replace('\n', "\r\n")).is_err());
        assert_eq!(NarInfo::parse("garbage\n"), Err(ParseError::Line(1)));
        let dup = format!("{REAL}StorePath: /nix/store/4mspmnyqbg8wgv51qfcjppav6w9x9zfw-hello-out\n");
        assert_eq!(NarInfo::parse(&dup), Err(ParseError::Duplicate("StorePath")));
        assert_eq!(NarInfo::parse(&"x".repeat(MAX_NARINFO_LEN + 1)), Err(ParseError::TooLarge));
    }

    #[test]
    fn missing_compression_means_bzip2() {
        let info = NarInfo::parse(&REAL.replace("Compression: none\n", "")).unwrap();
        assert_eq!(info.compression, "bzip2");
    }
}
