//! The demo of `kubekuma up`: the bundled demo manifests and the demo's admin user.

use std::path::{Path, PathBuf};

use crate::catalog::decode::parse_text;

/// The demo manifests bundled into the binary (`deploy/examples/demo/`).
pub const DEMO: &[(&str, &str)] = &[
    (
        "monitors.yaml",
        include_str!("../../../deploy/examples/demo/monitors.yaml"),
    ),
    (
        "status-page.yaml",
        include_str!("../../../deploy/examples/demo/status-page.yaml"),
    ),
];

/// Write the bundled demo manifests into `<data>/demo/` (refreshing them) and return that folder.
pub(super) fn materialize_demo(data: &Path) -> std::io::Result<PathBuf> {
    let dir = data.join("demo");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in DEMO {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            std::fs::write(&path, text)?;
        }
    }
    demo_admin(data, &dir)?;
    Ok(dir)
}

/// File (in the data folder) holding the demo admin's password.
pub(super) const DEMO_PASSWORD_FILE: &str = "demo-admin-password";

/// The demo's admin user for the admin API: on the first `up`, a random password is
/// written to `<data>/demo-admin-password` (mode 0600, never printed or logged) and its
/// argon2id hash, with the LocalUser, to `<demo>/admin.yaml`. Later runs keep both.
fn demo_admin(data: &Path, dir: &Path) -> std::io::Result<()> {
    let manifest = dir.join("admin.yaml");
    let password_file = data.join(DEMO_PASSWORD_FILE);
    if manifest.exists() && password_file.exists() {
        return Ok(());
    }
    use base64::Engine as _;
    let password =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let hash = crate::admin::auth::password::hash_spec(password.as_bytes())
        .map_err(|e| std::io::Error::other(format!("cannot hash the demo password: {e}")))?;
    let yaml = format!(
        "# The demo's admin for the admin API (`kubekuma up`); the password is in\n\
         # {DEMO_PASSWORD_FILE} in the data folder.\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo-admin-password\n  namespace: demo\n\
         stringData:\n  passwordHash: '{hash}'\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata:\n  name: admin\n  namespace: demo\n\
         spec:\n  username: admin\n  role: admin\n  passwordHashSecretRef: {{name: demo-admin-password, key: passwordHash}}\n"
    );
    write_private(&password_file, password.as_bytes())?;
    std::fs::write(manifest, yaml)
}

/// Write `bytes` to a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// The bundled demo manifests, parsed as the catalog parses files (for the tests of the
/// demo manifests).
#[doc(hidden)]
pub fn demo_files() -> Vec<crate::catalog::decode::FileDocs> {
    DEMO.iter()
        .map(|(name, text)| parse_text(name, text))
        .collect()
}
