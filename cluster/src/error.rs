//! The cluster crate's errors, one enum per operation that callers tell apart.

use rollcall_runtime::node::{CallError, NodeError};

/// Why the server's ring service did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingServiceError {
    /// The shards' supervisor could not be started under the node.
    #[error("could not start the ring shards: {0}")]
    Shards(#[from] NodeError),
}

/// Why the server's ask of one chain member failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No connection to the member could be made.
    #[error("could not dial the member: {0}")]
    Dial(CallError),
    /// Dialing took longer than the fan-out's dial timeout.
    #[error("dial timed out")]
    DialTimedOut,
    /// The call itself failed.
    #[error("{0}")]
    Call(CallError),
    /// It did not take the question within the hop timeout.
    #[error("did not take the question within {0:?}")]
    NotTaken(std::time::Duration),
    /// It took the question, then stopped answering the server's probes.
    #[error("stopped answering while it worked: {0}")]
    Stalled(CallError),
}

impl AskError {
    /// Whether the link closed under the call, or was one the member had let go (a
    /// stateless reset): a new connection reaches it, so it is worth asking again at once.
    pub fn link_closed(&self) -> bool {
        matches!(
            self,
            AskError::Call(
                CallError::NotConnected(_)
                    | CallError::Transport(
                        rollcall_runtime::TransportError::ClosedByPeer(_)
                            | rollcall_runtime::TransportError::LocallyClosed
                            | rollcall_runtime::TransportError::Reset
                    )
            )
        )
    }
}

/// A malformed answer or partial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// An answer's bytes are not an encoded `NodeAnswer`.
    #[error("undecodable answer: {0}")]
    Answer(String),
}
