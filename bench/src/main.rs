//! `etcd-bench` binary: command-line parsing and wiring only.

fn main() -> anyhow::Result<()> {
    Ok(())
}
