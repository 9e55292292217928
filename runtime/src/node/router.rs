//! `Router`: a node's few named routes, searched in order.

use ractor::ActorRef;

use crate::identity::Roles;
use std::sync::{Arc, RwLock};

#[allow(unused_imports)]
use super::*;

/// Named local destinations of remote messages.
#[derive(Clone, Default)]
pub struct Router {
    /// A node has a handful of routes: a list searched in order beats hashing the name of
    /// every envelope, and short names are kept inline (no pointer to follow per lookup).
    pub(super) routes: Arc<RwLock<Vec<Route>>>,
}

/// A destination's name, where its messages go, and who may send them.
pub(super) type Route = (compact_str::CompactString, Arc<dyn Deliver>, Roles);

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = crate::sync::read(&self.routes)
            .iter()
            .map(|(n, _, _)| n.to_string())
            .collect();
        write!(f, "Router({names:?})")
    }
}

impl Router {
    /// Routes messages addressed to `name` from peers whose certificate holds one of
    /// `roles` to `target`, replacing any earlier route. Messages from other roles are
    /// refused before `target` sees them.
    pub fn register(&self, name: impl Into<String>, roles: Roles, target: Arc<dyn Deliver>) {
        let name: String = name.into();
        let mut r = crate::sync::write(&self.routes);
        match r.iter_mut().find(|(n, _, _)| *n == name) {
            Some(route) => {
                route.1 = target;
                route.2 = roles;
            }
            None => r.push((name.into(), target, roles)),
        }
    }

    /// Routes messages addressed to `name` from `roles` to a ractor actor.
    pub fn register_actor<M>(&self, name: impl Into<String>, roles: Roles, actor: ActorRef<M>)
    where
        M: From<Incoming> + ractor::Message,
    {
        self.register(name, roles, Arc::new(actor));
    }

    /// Removes a route.
    pub fn unregister(&self, name: &str) {
        crate::sync::write(&self.routes).retain(|(n, _, _)| n != name);
    }

    /// Removes every route (a stopping node: routes often hold what holds the node).
    pub fn clear(&self) {
        crate::sync::write(&self.routes).clear();
    }

    pub(super) fn lookup(&self, name: &str) -> Option<(Arc<dyn Deliver>, Roles)> {
        let routes = crate::sync::read(&self.routes);
        routes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, target, roles)| (target.clone(), *roles))
    }
}
