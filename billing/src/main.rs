//! `plg-billing` binary; everything lives in the library (`plg_billing::cli`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plg_billing::cli::main().await
}
