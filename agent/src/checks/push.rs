//! The `push` arm of [`super::run`]. A push monitor is not probed: it waits for pushes
//! to `/api/v1/push/<token>`, which only a running agent receives. The agent evaluates a
//! push monitor's deadline in [`crate::push::PushHub::evaluate`] and `kubekuma check`
//! skips push monitors, so this arm only answers a direct call (such as the benchmark's
//! mix of monitors) with the outcome such a run can honestly have.

use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

use super::{Attempt, CheckContext};

/// One attempt: without a running agent no push can have arrived.
pub(crate) async fn check(
    _ctx: &CheckContext,
    _namespace: &str,
    _spec: &MonitorSpec,
    _attempt: &Attempt,
) -> CheckOutcome {
    CheckOutcome::down(
        0.0,
        FailureReason::Missed,
        "no push received: push monitors wait for pushes to /api/v1/push/<token> on a running agent",
    )
}
