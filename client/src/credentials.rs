//! Where the CLI keeps the login: `credentials.json` and `mesh-ca.pem` in the config dir
//! (`$PLG_CONFIG_DIR`, else the platform's config dir + `plg`), readable by the owner only.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Saved login.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Billing base URL.
    pub billing_url: String,
    /// Account email.
    pub email: String,
    /// JWT access token.
    pub access_token: String,
    /// Unix seconds when the token expires.
    pub expires_at: u64,
    /// Mesh CA certificate (PEM) fetched at login.
    pub mesh_ca_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("billing_url", &self.billing_url)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The config dir.
pub fn config_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PLG_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    Ok(dirs::config_dir()
        .context("no config directory on this system; set PLG_CONFIG_DIR")?
        .join("plg"))
}

fn file(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

/// The billing URL of the last login (`billing-url` in `dir`; kept across `plg logout`, so
/// the next `plg login` needs no `--billing`).
pub fn saved_billing_url(dir: &Path) -> Option<String> {
    let url = fs::read_to_string(dir.join("billing-url")).ok()?;
    let url = url.trim();
    (!url.is_empty()).then(|| url.to_owned())
}

/// Remembers `url` as the billing of later logins.
pub fn save_billing_url(dir: &Path, url: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("billing-url");
    fs::write(&path, format!("{url}\n")).with_context(|| format!("writing {}", path.display()))
}

impl Credentials {
    /// Loads the saved login from `dir`.
    pub fn load(dir: &Path) -> Result<Credentials> {
        let path = file(dir);
        let text = fs::read_to_string(&path)
            .with_context(|| "not logged in: run `plg login --billing URL --email EMAIL` first")?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; run `plg login` again", path.display()))
    }

    /// Saves atomically with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("credentials.json.tmp");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file(dir))?;
        Ok(())
    }

    /// Forgets the login. Returns whether there was one.
    pub fn remove(dir: &Path) -> Result<bool> {
        match fs::remove_file(file(dir)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_billing_url_outlives_a_logout() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_billing_url(dir.path()), None);
        save_billing_url(dir.path(), "http://127.0.0.1:8080").unwrap();
        assert!(!Credentials::remove(dir.path()).unwrap());
        assert_eq!(
            saved_billing_url(dir.path()).as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn save_load_remove_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials {
            billing_url: "http://b".into(),
            email: "a@b.c".into(),
            access_token: "secret-token".into(),
            expires_at: 5,
            mesh_ca_pem: "pem".into(),
        };
        c.save(dir.path()).unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
        let back = Credentials::load(dir.path()).unwrap();
        assert_eq!(back.access_token, "secret-token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(file(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Credentials::remove(dir.path()).unwrap());
        assert!(!Credentials::remove(dir.path()).unwrap());
        assert!(Credentials::load(dir.path()).is_err());
    }
}
