//! Embedding Shoal with application hooks: per-user topic areas (see `rules.rs`) on
//! top of the `[auth]` password file, if the config names one.
//!
//! ```text
//! cargo run -p shoal-server --example user_topics -- [CONFIG.toml]
//! ```
//!
//! Runs until Ctrl-C. `docs/HOOKS.md` explains the threading contract.

mod rules;

use std::sync::Arc;

use shoal_server::{Broker, Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match std::env::args_os().nth(1) {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let broker = Broker::start_with_hooks(config, Arc::new(rules::UserTopics))?;
    for addr in broker.local_addrs() {
        println!("listening on tcp://{addr}");
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    signals.forever().next();
    broker.shutdown()?;
    Ok(())
}
