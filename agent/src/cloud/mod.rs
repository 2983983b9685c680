//! Everything that talks to AWS: the instance identity (IMDS), one deliberately built SDK
//! configuration, the floating resources, and the SSM parameters.
//!
//! Retries: one layer per concern. Inside a call, the SDK retries throttling and 5xx errors a
//! bounded number of times (standard mode, 3 attempts) within the call's operation timeout;
//! outside, the core's reconciler retries failed calls with jittered exponential backoff.
//! Every call has exactly one deadline, given by the core so that it ends inside the lease;
//! [`within`] enforces it and checks the clock *before* it lets the call make progress, so a
//! process resumed after a pause never starts a request past its deadline.

pub mod imds;
pub mod resources;

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::time::Instant;

use crate::config::Settings;

/// Who this node is, on EC2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub network_interface_id: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

/// Resolves the identity: configuration overrides first, IMDS for the rest.
pub async fn resolve_identity(settings: &Settings) -> Result<Identity, imds::ImdsError> {
    let aws = &settings.aws;
    let fetched = if settings.needs_imds() {
        Some(imds::Imds::new(&aws.imds_endpoint).fetch().await?)
    } else {
        None
    };
    let pick = |configured: &Option<String>, from_imds: fn(&imds::InstanceMetadata) -> String| {
        configured
            .clone()
            .or_else(|| fetched.as_ref().map(from_imds))
            .unwrap_or_default()
    };
    Ok(Identity {
        instance_id: pick(&aws.instance_id, |m| m.instance_id.clone()),
        region: pick(&aws.region, |m| m.region.clone()),
        network_interface_id: pick(&aws.network_interface_id, |m| {
            m.network_interface_id.clone()
        }),
        private_ip: aws
            .private_ip
            .or(fetched.as_ref().map(|m| m.private_ip))
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        public_ip: aws.public_ip.or(fetched.as_ref().and_then(|m| m.public_ip)),
    })
}

/// The one SDK configuration of the agent: pinned behaviour version, explicit region,
/// bounded retries and timeouts, the endpoint override when set.
pub async fn sdk_config(settings: &Settings, identity: &Identity) -> SdkConfig {
    let call_timeout = settings.aws.call_timeout;
    let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .region(Region::new(identity.region.clone()))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(call_timeout / 4),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(call_timeout.min(Duration::from_secs(1)))
                .operation_attempt_timeout(call_timeout)
                .operation_timeout(call_timeout)
                .build(),
        );
    if let Some(endpoint) = &settings.aws.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// What kind of failure an AWS call met, for messages and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The instance profile lacks a permission.
    AccessDenied,
    /// AWS asked us to slow down.
    Throttled,
    /// A 5xx or a transport problem; retrying may help.
    Transient,
    /// The call ran into its deadline.
    Deadline,
    /// Anything else (a missing resource, a bad request).
    Other,
}

/// A failed AWS call, with the IAM action it needed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CloudError {
    pub action: &'static str,
    pub kind: FailureKind,
    pub detail: String,
}

impl CloudError {
    fn describe(&self) -> String {
        match self.kind {
            FailureKind::AccessDenied => format!(
                "{}: access denied: the instance profile needs the IAM action {} (see packaging/iam-policy.json): {}",
                self.action, self.action, self.detail
            ),
            FailureKind::Throttled => format!("{}: throttled by AWS: {}", self.action, self.detail),
            FailureKind::Deadline => format!("{}: no answer before the call's deadline", self.action),
            FailureKind::Transient | FailureKind::Other => {
                format!("{}: {}", self.action, self.detail)
            }
        }
    }

    pub fn deadline(action: &'static str) -> CloudError {
        CloudError {
            action,
            kind: FailureKind::Deadline,
            detail: String::new(),
        }
    }

    pub fn other(action: &'static str, detail: impl Into<String>) -> CloudError {
        CloudError {
            action,
            kind: FailureKind::Other,
            detail: detail.into(),
        }
    }

    /// Classifies an SDK error.
    pub fn from_sdk<E>(action: &'static str, error: SdkError<E, HttpResponse>) -> CloudError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = error.code().unwrap_or_default().to_string();
        let status = error.raw_response().map(|r| r.status().as_u16());
        let kind = match code.as_str() {
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedAccess" => FailureKind::AccessDenied,
            "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "Throttled"
            | "TooManyRequestsException"
            | "PriorRequestNotComplete" => FailureKind::Throttled,
            _ if matches!(error, SdkError::TimeoutError(_)) => FailureKind::Deadline,
            _ if matches!(
                error,
                SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
            ) =>
            {
                FailureKind::Transient
            }
            _ if status.is_some_and(|s| s >= 500) => FailureKind::Transient,
            _ => FailureKind::Other,
        };
        CloudError {
            action,
            kind,
            detail: DisplayErrorContext(&error).to_string(),
        }
    }
}

/// Runs `call` until `deadline`. The clock is checked before every poll of the call, so
/// that work is never started (or resumed, after the process was paused) past the deadline.
pub async fn within<F: Future>(deadline: Instant, call: F) -> Option<F::Output> {
    let mut call = pin!(call);
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    std::future::poll_fn(|cx| {
        if Instant::now() >= deadline {
            return Poll::Ready(None);
        }
        if let Poll::Ready(output) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every IAM action the adapters call is granted by the shipped policy.
    #[test]
    fn the_shipped_iam_policy_grants_every_action_the_code_uses() {
        let policy = include_str!("../../../packaging/iam-policy.json");
        let source = include_str!("resources.rs");
        let actions: Vec<&str> = source
            .lines()
            .filter_map(|line| line.trim().strip_prefix("const ACTION: &str = \""))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(actions.len() >= 7, "found only {actions:?}");
        let policy: serde_json::Value = serde_json::from_str(policy).expect("valid JSON");
        let granted: Vec<String> = policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                serde_json::Value::Array(list) => list
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        for action in actions {
            assert!(
                granted.iter().any(|g| g == action),
                "packaging/iam-policy.json does not grant {action}"
            );
        }
    }

    #[tokio::test]
    async fn within_never_polls_a_call_past_its_deadline() {
        let polled = std::sync::atomic::AtomicBool::new(false);
        let late = within(Instant::now() - Duration::from_millis(1), async {
            polled.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
        assert!(late.is_none());
        assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));
        let slow = within(
            Instant::now() + Duration::from_millis(20),
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert!(slow.is_none());
        let quick = within(Instant::now() + Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Some(7));
    }
}
