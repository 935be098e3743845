//! Configuration of `peerix serve`: command-line flags, `PEERIX_*` environment variables and a TOML
//! file (`--config`), in that order of precedence, over built-in defaults.
//!
//! [`ServeArgs`] is what clap parses ([`args`]); [`FileConfig`] is the TOML file ([`file`]);
//! [`ServeConfig`] is the validated result the daemon runs on ([`resolve`]), over the built-in
//! [`defaults`]; [`units`] reads sizes, durations and URLs; [`effective`] writes the configuration
//! a daemon ran with (`STATE_DIR/serve.toml`, `--print-config`).

mod args;
mod defaults;
mod effective;
mod error;
mod file;
mod resolve;
mod units;

pub use self::args::ServeArgs;
pub use self::defaults::*;
pub use self::error::ConfigError;
pub use self::file::FileConfig;
pub use self::resolve::ServeConfig;
pub use self::units::{http_url, in_range, parse_duration, parse_size};

#[cfg(test)]
mod tests;
