//! The `dns` checker.

use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

use super::{Attempt, CheckContext};

/// One attempt.
pub(crate) async fn check(
    _ctx: &CheckContext,
    _namespace: &str,
    spec: &MonitorSpec,
    _attempt: &Attempt,
) -> CheckOutcome {
    CheckOutcome::down(
        0.0,
        FailureReason::Config,
        format!(
            "monitor type {} is not supported by this version",
            spec.type_
        ),
    )
}
