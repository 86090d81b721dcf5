//! `cloudmasterd`: the master (DESIGN.md §1).

mod api;
mod app;
mod auth;
mod bootcfg;
mod config;
mod engine;
mod fd_limit;
mod files;
mod hub;
mod idempotency;
mod images;
mod import_dir;
mod reconciler;
mod retention;
mod scheduler;
mod server;
mod state;
mod store;
mod uploads;
mod view;
mod volume_placement;

use anyhow::Context;
use clap::Parser;
use cm_api::local::{runtime_dir, MasterPointer, POINTER_FILE};
use state::App;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::sqlite::SqliteStore;
use store::Store;
use uuid::Uuid;

const CLOUD_ID: &str = "cloud_id";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = config::Args::parse();
    if args.print_openapi {
        let doc = api::openapi::document_text(&api::openapi_document());
        std::io::Write::write_all(&mut std::io::stdout(), doc.as_bytes())?;
        return Ok(());
    }
    let cfg = config::Config::load(&args)?;
    let data_dir = cfg.settings.data_dir.clone();
    std::fs::create_dir_all(data_dir.join("images"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
    let store = SqliteStore::open(&data_dir.join("cloud.db")).context("opening the store")?;

    let cloud_id = match store.get_setting(CLOUD_ID)? {
        Some(id) => Uuid::parse_str(&id).context("stored cloud id")?,
        None => {
            let id = Uuid::new_v4();
            store.set_setting(CLOUD_ID, &id.to_string())?;
            id
        }
    };
    let token_file = data_dir.join(auth::ADMIN_TOKEN_FILE);
    if args.reset_admin_token || store.get_setting("admin_token_made")?.is_none() {
        // A master running on this store notices within auth::TOKEN_REFRESH.
        auth::rotate_admin_token(&store, &data_dir)?;
        store.set_setting("admin_token_made", "1")?;
        tracing::info!("admin token written to {}", token_file.display());
        if args.reset_admin_token {
            return Ok(());
        }
    }
    auth::init_join_token(&store, &data_dir)?;
    let known: Vec<Uuid> = store.list_images()?.iter().map(|i| i.id).collect();
    images::remove_orphans(&data_dir.join("images"), &known);
    let uploads = uploads::Uploads::new(&cfg.settings)?;
    uploads.recover(&store).context("cleaning up uploads")?;
    app::transfers::sweep_on_start(&data_dir, &store).context("cleaning up transfers")?;

    let keys = bootcfg::Keyring::open(&data_dir.join("boot.key")).context("the boot-config key")?;
    let store: Arc<dyn Store> = Arc::new(store);
    let app = Arc::new(App::new(
        store,
        cfg.settings.clone(),
        cloud_id,
        keys,
        uploads,
    )?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(serve(app, cfg, token_file))
}

async fn serve(app: Arc<App>, cfg: config::Config, token_file: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    if !cfg.listen.ip().is_loopback() {
        tracing::warn!(
            "listening on {} without TLS: bearer tokens cross the network in clear (see docs/security.md)",
            cfg.listen
        );
    }
    let pointer = write_pointer(&cfg.url, &token_file);
    tracing::info!(
        "cloudmasterd {} listening on {} (cloud {})",
        env!("CARGO_PKG_VERSION"),
        cfg.listen,
        app.cloud_id
    );
    tokio::spawn(reconciler::run(app.clone()));
    tokio::spawn(engine::cpe::run(app.clone()));
    tokio::spawn(retention::run(app.clone()));
    tokio::spawn(auth::watch_tokens(app.clone()));
    tokio::spawn(uploads::sweep(app.clone()));
    tokio::spawn(app::image_builds::resume(app.clone()));
    let router = api::router(app.clone());
    server::serve(listener, router, cfg.conn, shutdown_signal()).await?;
    if let Some(p) = pointer {
        remove_pointer_if_ours(&p, &cfg.url);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tell `cm` on this machine where we are (cm_api::local).
fn write_pointer(url: &str, token_file: &Path) -> Option<PathBuf> {
    // SAFETY: getuid has no preconditions.
    let dir = runtime_dir(unsafe { libc::getuid() });
    let p = MasterPointer {
        url: url.to_string(),
        token_file: token_file.to_path_buf(),
    };
    let text = toml::to_string(&p).ok()?;
    let res = std::fs::create_dir_all(&dir)
        .and_then(|_| files::write_atomic(&dir.join(POINTER_FILE), &text, 0o644));
    match res {
        Ok(()) => Some(dir.join(POINTER_FILE)),
        Err(e) => {
            tracing::warn!(
                "cannot write {}: {e} (cm will need CM_URL/CM_TOKEN)",
                dir.display()
            );
            None
        }
    }
}

fn remove_pointer_if_ours(path: &Path, url: &str) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<MasterPointer>(&t).ok())
        .map(|p| p.url == url)
        .unwrap_or(false);
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
