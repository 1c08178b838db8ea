//! What Patroni's REST API answers, as the client reads it: a `GET /patroni` and a `GET /cluster`
//! body from the network. Never a panic; what parses keeps the client's promises (at most one
//! leader is named, the one `leader()` returns; a lag is bytes or unknown).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::repository::patroni::{ClusterRole, ClusterView, MemberStatus, Role};

fuzz_target!(|data: &[u8]| {
    if let Ok(member) = MemberStatus::parse(data) {
        // A role name reads the same whichever way it is spelled: Other never holds a known name.
        if let Role::Other(name) = &member.role {
            assert!(!["master", "primary", "replica", "standby_leader", "demoted"]
                .contains(&name.as_str()));
        }
        let _ = member.is_running();
    }
    if let Ok(view) = ClusterView::parse(data) {
        if let Some(leader) = view.leader() {
            assert_eq!(leader.role, ClusterRole::Leader);
            assert!(view.member(&leader.name).is_some());
        }
        for member in &view.members {
            if let ClusterRole::Other(name) = &member.role {
                assert!(!["leader", "standby_leader", "sync_standby", "quorum_standby", "replica"]
                    .contains(&name.as_str()));
            }
        }
    }
});
