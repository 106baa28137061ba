//! `etcd-operator` binary: wiring only.

fn main() -> anyhow::Result<()> {
    eprintln!("etcd-operator: the controller is not built yet; see README.md");
    Ok(())
}
