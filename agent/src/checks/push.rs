//! The `push` checker, for one-off runs such as `kubekuma check`. A push monitor is not
//! probed: it waits for pushes to `/api/v1/push/<token>`, which only a running agent
//! receives. In the agent, a scheduled run of a push monitor evaluates its deadline in
//! [`crate::push::PushHub::evaluate`] instead of calling this.

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
