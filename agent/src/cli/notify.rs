//! `kubekuma notify`: send a test message through a NotificationProvider by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kubekuma_crds::NotificationProvider;

use crate::catalog::folder::read_paths;
use crate::catalog::snapshot::{ObjKey, Snapshot, build};
use crate::notify::providers::{Message, ProviderContext};

use super::{NotifyCommand, print_findings};

/// `kubekuma notify test`: send the message and report the outcome; exit 2 when the
/// provider is unknown or ambiguous, 1 when sending failed.
pub(super) async fn notify(what: NotifyCommand) -> ExitCode {
    let NotifyCommand::Test {
        provider,
        config,
        title,
        message,
    } = what;
    let snap = read_manifests(&config);
    let Some((key, p)) = find_provider(&snap, &provider) else {
        return ExitCode::from(2);
    };
    let msg = Message::test(title, message);
    let ctx = ProviderContext::new(Arc::new(snap.secrets.clone()));
    let started = std::time::Instant::now();
    let Some(plan) = snap.provider_plans.get(key) else {
        eprintln!("kubekuma notify test: {key} is not valid (see kubekuma validate)");
        return ExitCode::from(2);
    };
    match crate::notify::providers::send(&ctx, plan, &msg).await {
        Ok(d) => {
            println!(
                "sent through {key} ({}) in {} ms: {}",
                p.spec.type_,
                started.elapsed().as_millis(),
                d.detail
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "kubekuma notify test: {key} ({}) failed{}: {e}",
                p.spec.type_,
                if e.retryable() {
                    " (temporary; the agent would retry)"
                } else {
                    ""
                }
            );
            ExitCode::FAILURE
        }
    }
}

/// The valid resources of the manifests in `config`; their findings go to stderr.
fn read_manifests(config: &[PathBuf]) -> Snapshot {
    let built = build(&read_paths(config), None);
    print_findings(&mut std::io::stderr(), &built.findings);
    built.snapshot
}

/// The one provider named `NAME` or `NAMESPACE/NAME` by `provider`, or `None` after
/// telling on stderr that there is none or more than one.
fn find_provider<'a>(
    snap: &'a Snapshot,
    provider: &str,
) -> Option<(&'a ObjKey, &'a NotificationProvider)> {
    let (namespace, name) = match provider.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, provider),
    };
    let found: Vec<_> = snap
        .providers
        .iter()
        .filter(|(k, _)| k.name == name && namespace.is_none_or(|ns| k.namespace == ns))
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        [] => {
            let known: Vec<String> = snap.providers.keys().map(|k| k.to_string()).collect();
            eprintln!(
                "kubekuma notify test: no valid NotificationProvider {provider} in the manifests{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (there are: {})", known.join(", "))
                }
            );
            None
        }
        many => {
            let names: Vec<String> = many.iter().map(|(k, _)| k.to_string()).collect();
            eprintln!(
                "kubekuma notify test: {provider} is ambiguous; give NAMESPACE/NAME: {}",
                names.join(", ")
            );
            None
        }
    }
}
