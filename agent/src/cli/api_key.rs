//! `kubekuma api-key`: generate an API key of the admin API and its manifests.

use std::process::ExitCode;

use super::{ApiKeyCommand, parse_role};

/// `kubekuma api-key create`: the key on stderr, the Secret and the ApiKey (with the key's
/// public identifier as `spec.keyId`) on stdout.
pub(super) fn api_key(what: ApiKeyCommand) -> ExitCode {
    use crate::admin::auth::{api_key, manifests, password};
    let ApiKeyCommand::Create {
        name,
        role,
        namespace,
        test,
        expires,
        owner,
    } = what;
    let fail = |msg: String| {
        eprintln!("kubekuma api-key create: {msg}");
        ExitCode::from(2)
    };
    if name.trim().is_empty() {
        return fail("--name must not be empty".into());
    }
    if !manifests::valid_name(&namespace) {
        return fail(format!(
            "--namespace must be a Kubernetes name (lowercase letters, digits, '-'), got {namespace:?}"
        ));
    }
    if let Some(o) = owner.as_deref()
        && !manifests::valid_label_value(o)
    {
        return fail(format!(
            "--owner must be a label value (at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit), got {o:?}"
        ));
    }
    let Some(resource) = manifests::resource_name(&name) else {
        return fail(format!(
            "cannot derive a resource name from --name {name:?}; use letters or digits"
        ));
    };
    let expires_at = match expires
        .as_deref()
        .map(|e| manifests::parse_expiry(e, chrono::Utc::now()))
    {
        None => None,
        Some(Ok(t)) if t > chrono::Utc::now() => Some(t),
        Some(Ok(_)) => return fail("--expires is in the past".into()),
        Some(Err(e)) => return fail(format!("--expires: {e}")),
    };
    let key = api_key::generate(test);
    let Some(key_id) = api_key::key_id(&key) else {
        return fail("generated a malformed key".into());
    };
    let hash = match password::hash_spec(key.as_bytes()) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    let yaml = manifests::api_key_yaml(
        &resource,
        &namespace,
        name.trim(),
        parse_role(&role),
        expires_at,
        owner.as_deref(),
        key_id,
        &hash,
    );
    eprintln!(
        "API key for {namespace}/{resource} (store it now; it is not shown again):\n\n  {key}\n\n\
         Apply the manifests printed on stdout (e.g. `kubekuma api-key create … | kubectl apply -f -`) \
         and send the key as `Authorization: Bearer <key>`."
    );
    print!("{yaml}");
    ExitCode::SUCCESS
}
