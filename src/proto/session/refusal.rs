//! Why a capture request is refused after its upgrade, as data: each
//! reason has one close code, one text and one metric, whichever call site
//! meets it. The client gets `101` and a close frame with these (API.md:
//! refusals travel in the close frame so clients can show them).

use crate::metrics;
use crate::proto::discovery::DiscoveryError;
use crate::proto::ws;

/// `target` is the label of the target a reason is about in a capture of
/// several targets (`None` for a capture of one).
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The request's parameters are unusable.
    Parameters(String),
    /// A capture of several targets would pass `--max-captures`.
    TooManyTargets { targets: usize, max: usize },
    /// Neither a usable `netns` nor a name to look up.
    NoReference { target: Option<String> },
    /// The discovery service could not answer for a target (or at all).
    Discovery {
        error: DiscoveryError,
        service: String,
        target: Option<String>,
    },
    /// The discovery service lists the target without a namespace.
    ListedWithoutNetns {
        name: String,
        target: Option<String>,
    },
    /// The service lacks the privileges to capture.
    Privileges(String),
    /// The target's namespace is not there (or its interfaces are not).
    Namespace { why: String, target: Option<String> },
    /// The interfaces of the target's namespace cannot be listed.
    LinksUnreadable { why: String },
    /// The capture program did not start.
    Program {
        program: String,
        why: String,
        target: Option<String>,
    },
    /// A started program's output cannot be watched.
    CannotWatch { target: Option<String> },
}

fn on(target: &Option<String>) -> String {
    match target {
        Some(t) => format!("target {t}: "),
        None => String::new(),
    }
}

impl Refusal {
    /// The close code the client gets.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::Parameters(_)
            | Refusal::NoReference { .. }
            | Refusal::ListedWithoutNetns { .. }
            | Refusal::Namespace { .. } => ws::POLICY_VIOLATION,
            Refusal::TooManyTargets { .. } => ws::TRY_AGAIN_LATER,
            Refusal::Discovery {
                error: DiscoveryError::NotListed { .. },
                ..
            } => ws::POLICY_VIOLATION,
            Refusal::Discovery { .. }
            | Refusal::Privileges(_)
            | Refusal::LinksUnreadable { .. }
            | Refusal::Program { .. }
            | Refusal::CannotWatch { .. } => ws::INTERNAL_ERROR,
        }
    }

    /// The close reason (cut to fit the frame by `ws::close_frame`).
    pub fn text(&self) -> String {
        match self {
            Refusal::Parameters(why) => format!("capture refused: {why}"),
            Refusal::TooManyTargets { targets, max } => format!(
                "capture refused: {targets} targets would exceed this service's maximum of {max} captures"
            ),
            Refusal::NoReference { target: None } => "capture refused: the target has no valid netns and no name to look up with the discovery service".into(),
            Refusal::NoReference { target: Some(t) } => {
                format!("capture refused: target {t} has no valid netns and no name to look up")
            }
            Refusal::Discovery {
                error,
                service,
                target,
            } => format!("{}{}", on(target), error.describe(service)),
            Refusal::ListedWithoutNetns { name, target: None } => format!(
                "capture refused: the discovery service lists {name:?} without a network namespace"
            ),
            Refusal::ListedWithoutNetns {
                target: Some(t), ..
            } => format!(
                "capture refused: the discovery service lists target {t} without a network namespace"
            ),
            Refusal::Privileges(why) => why.clone(),
            Refusal::Namespace { why, target } => {
                format!("capture refused: {}{why}", on(target))
            }
            Refusal::LinksUnreadable { why } => {
                format!("cannot list the interfaces of the target's network namespace: {why}")
            }
            Refusal::Program {
                program,
                why,
                target,
            } => format!("{}cannot start capture program {program}: {why}", on(target)),
            Refusal::CannotWatch { target: None } => {
                "internal error: cannot watch the capture output".into()
            }
            Refusal::CannotWatch { target: Some(t) } => {
                format!("internal error: cannot watch target {t}'s output")
            }
        }
    }

    /// The refusals metric's reason.
    pub fn metric(&self) -> metrics::Refusal {
        use metrics::Refusal as M;
        match self {
            Refusal::Parameters(_) | Refusal::NoReference { .. } => M::Parameters,
            Refusal::TooManyTargets { .. } => M::Limit,
            Refusal::Discovery { .. } | Refusal::ListedWithoutNetns { .. } => M::Discovery,
            Refusal::Privileges(_) => M::Privileges,
            Refusal::Namespace { .. } | Refusal::LinksUnreadable { .. } => M::Namespace,
            Refusal::Program { .. } | Refusal::CannotWatch { .. } => M::Program,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_about_one_of_several_targets_names_it() {
        let one = Refusal::Namespace {
            why: "no network namespace 7".into(),
            target: None,
        };
        let of_many = Refusal::Namespace {
            why: "no network namespace 7".into(),
            target: Some("web".into()),
        };
        assert_eq!(one.text(), "capture refused: no network namespace 7");
        assert_eq!(
            of_many.text(),
            "capture refused: target web: no network namespace 7"
        );
        assert_eq!(one.code(), of_many.code());
    }

    #[test]
    fn codes_follow_who_is_at_fault() {
        let service = "gw:5000".to_string();
        let not_listed = Refusal::Discovery {
            error: DiscoveryError::NotListed {
                name: "x".into(),
                prefix: String::new(),
            },
            service: service.clone(),
            target: None,
        };
        assert_eq!(not_listed.code(), ws::POLICY_VIOLATION);
        let timed_out = Refusal::Discovery {
            error: DiscoveryError::TimedOut,
            service,
            target: None,
        };
        assert_eq!(timed_out.code(), ws::INTERNAL_ERROR);
        assert_eq!(
            Refusal::TooManyTargets { targets: 3, max: 2 }.code(),
            ws::TRY_AGAIN_LATER
        );
        assert_eq!(
            Refusal::TooManyTargets { targets: 3, max: 2 }.metric(),
            metrics::Refusal::Limit
        );
    }
}
