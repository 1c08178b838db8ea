//! Each cluster failure says who acts on it.

use crate::control::cluster::*;
use crate::control::operations::ErrorKind;
use crate::repository::SessionError;

#[test]
fn each_cluster_failure_says_who_acts() {
    let closed = || SessionError::Closed;
    let upstream = [
        ClusterError::Unreachable {
            repository: "db:5432".into(),
            message: "no answer".into(),
        },
        ClusterError::Repository {
            repository: "db:5432".into(),
            source: closed(),
        },
        ClusterError::Refused {
            repository: "db:5432".into(),
            source: closed(),
        },
        ClusterError::InRecovery {
            repository: "db:5432".into(),
        },
        ClusterError::NoPrimary {
            repository: "h1:5432,h2:5432".into(),
            tried: Vec::new(),
        },
    ];
    for e in upstream {
        assert_eq!(e.kind(), ErrorKind::Upstream, "{e}");
        assert!(e.is_unreachable() && !e.is_user_error(), "{e}");
    }
    let user = [
        ClusterError::Conflict {
            base: 1,
            current: 2,
        },
        ClusterError::NotANode,
        ClusterError::IdsExhausted {
            max: repo::MAX_NODES,
        },
        ClusterError::ShortPassphrase { min: 8 },
        ClusterError::BadNodeName("a b".into()),
    ];
    for e in user {
        assert_eq!(e.kind(), ErrorKind::User, "{e}");
        assert!(e.is_user_error() && !e.is_unreachable(), "{e}");
    }
    let corrupt = ClusterError::Corrupt("x".into());
    assert_eq!(corrupt.kind(), ErrorKind::Server);
    assert!(
        ClusterError::IdsExhausted {
            max: repo::MAX_NODES,
        }
        .to_string()
        .contains("every one of the cluster's 127 node ids is taken")
    );
}
