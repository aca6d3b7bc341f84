//! `kubekuma hash-password`: a Secret with an argon2id hash and the LocalUser using it.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::{HashPasswordArgs, parse_role};

/// `kubekuma hash-password`: the password from stdin's first line, the Secret and the
/// LocalUser on stdout.
pub(super) fn hash_password(a: HashPasswordArgs) -> ExitCode {
    use crate::admin::auth::{manifests, password};
    let fail = |msg: String| {
        eprintln!("kubekuma hash-password: {msg}");
        ExitCode::from(2)
    };
    if !manifests::valid_username(&a.username) {
        return fail(format!(
            "--username must be 1-64 letters, digits, '.', '_', '-' or '@', got {:?}",
            a.username
        ));
    }
    if !manifests::valid_name(&a.namespace) {
        return fail(format!(
            "--namespace must be a Kubernetes name (lowercase letters, digits, '-'), got {:?}",
            a.namespace
        ));
    }
    let name = match a.name {
        Some(n) if manifests::valid_name(&n) => n,
        Some(n) => {
            return fail(format!(
                "--name must be a Kubernetes name (lowercase letters, digits, '-'), got {n:?}"
            ));
        }
        None => match manifests::resource_name(&a.username) {
            Some(n) => n,
            None => {
                return fail("cannot derive a resource name from the username; give --name".into());
            }
        },
    };
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (one line; it is echoed, so pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    if let Err(e) = stdin.read_line(&mut line) {
        return fail(format!("cannot read the password from stdin: {e}"));
    }
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return fail("the password is empty: give it on the first line of stdin".into());
    }
    let hash = match password::hash_spec(pw.as_bytes()) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    print!(
        "{}",
        manifests::local_user_yaml(&name, &a.namespace, &a.username, parse_role(&a.role), &hash)
    );
    ExitCode::SUCCESS
}
