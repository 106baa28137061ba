//! The certificate planner, step by step: bootstrap, renewal before expiry and on request,
//! the three gated steps of a CA rotation, and recovery from expired material.

use std::time::{Duration, SystemTime};

use super::*;
use crate::certs::{Settings, Subjects, apply};
use crate::crd::TlsSpec;

fn settings(yaml: &str) -> Settings {
    let spec: TlsSpec = serde_yaml_ng::from_str(yaml).expect("tls spec");
    Settings::of(&spec).expect("settings")
}

fn subjects() -> Subjects {
    Subjects {
        server: vec!["127.0.0.10".into(), "localhost".into()],
        peer: vec!["127.0.0.10".into()],
    }
}

/// What a member loads when it runs on exactly `auth`'s files.
fn loaded(auth: &Authority) -> Loaded {
    Loaded {
        server: auth.server.as_ref().map(|s| s.info.sha256.clone()),
        client_cas: auth.bundle(),
        peer: auth.peer.as_ref().map(|s| s.info.sha256.clone()),
        peer_cas: auth.bundle(),
    }
}

fn members(l: &Loaded) -> Vec<(String, Option<Loaded>)> {
    (0..3).map(|i| (format!("m{i}"), Some(l.clone()))).collect()
}

const DAY: u64 = 24 * 3600;

struct World {
    auth: Authority,
    s: Settings,
    now: SystemTime,
}

impl World {
    fn new(yaml: &str) -> Self {
        let mut w = Self {
            auth: Authority::default(),
            s: settings(yaml),
            now: SystemTime::now(),
        };
        assert_eq!(w.next(&Requests::default(), None), CertStep::Bootstrap);
        w.run(&CertStep::Bootstrap, &Requests::default());
        w
    }

    /// The step with every member on the files (`on`: on other material).
    fn next(&self, r: &Requests, on: Option<&Loaded>) -> CertStep {
        let l = on.cloned().unwrap_or_else(|| loaded(&self.auth));
        next(
            &self.auth,
            &self.s.policy,
            r,
            &members(&l),
            crate::certs::issue::unix(self.now),
        )
    }

    fn run(&mut self, step: &CertStep, r: &Requests) {
        let changed =
            apply(&mut self.auth, step, r, "c", &subjects(), &self.s, self.now).expect("apply");
        assert!(changed, "{step:?} changed nothing");
    }
}

#[test]
fn a_fresh_authority_is_idle_and_renews_leaves_before_they_expire() {
    let mut w = World::new("enabled: true\nvalidity: 240h\nrenewBefore: 48h\n");
    assert_eq!(w.auth.cas.len(), 1);
    // Server, peer, the users' client certificate and the operator's own.
    assert_eq!(w.auth.leaves().count(), 4);
    let (user, own) = (
        w.auth.client.as_ref().expect("users'"),
        w.auth.operator.as_ref().expect("operator's"),
    );
    assert_ne!(user.info.sha256, own.info.sha256, "two certificates");
    assert_ne!(user.key_pem, own.key_pem, "two keys");
    assert_eq!(own.info.common_name, "root");
    assert_eq!(w.next(&Requests::default(), None), CertStep::Idle);
    w.now += Duration::from_secs(9 * DAY);
    let old = w.auth.server.clone();
    let step = w.next(&Requests::default(), None);
    assert!(matches!(step, CertStep::RenewLeaves { .. }), "{step:?}");
    // Members still on the old leaves: a renewal is not repeated, the planner waits.
    let before = loaded(&w.auth);
    w.run(&step, &Requests::default());
    assert_ne!(w.auth.server, old);
    assert!(matches!(
        w.next(&Requests::default(), Some(&before)),
        CertStep::Wait { .. }
    ));
    assert_eq!(w.next(&Requests::default(), None), CertStep::Idle);
}

#[test]
fn the_rotate_certs_annotation_renews_once_per_value() {
    let mut w = World::new("enabled: true\n");
    let r = Requests {
        rotate_certs: Some("1".into()),
        rotate_ca: None,
    };
    let step = w.next(&r, None);
    assert!(matches!(step, CertStep::RenewLeaves { .. }), "{step:?}");
    w.run(&step, &r);
    assert_eq!(w.next(&r, None), CertStep::Idle);
    let r2 = Requests {
        rotate_certs: Some("2".into()),
        rotate_ca: None,
    };
    assert!(matches!(w.next(&r2, None), CertStep::RenewLeaves { .. }));
}

#[test]
fn a_ca_rotation_takes_three_gated_steps_and_keeps_the_old_ca_until_the_end() {
    let mut w = World::new("enabled: true\n");
    let old_ca = w.auth.cas[0].info.sha256.clone();
    let r = Requests {
        rotate_certs: None,
        rotate_ca: Some("now".into()),
    };
    let step = w.next(&r, None);
    assert!(matches!(step, CertStep::AddCa { .. }), "{step:?}");
    let before = loaded(&w.auth);
    w.run(&step, &r);
    assert_eq!(w.auth.cas.len(), 2);
    assert_eq!(w.auth.phase, Phase::TrustBoth);
    // (1) → (2) only once every member trusts both CAs.
    assert!(matches!(w.next(&r, Some(&before)), CertStep::Wait { .. }));
    let mut one_behind = loaded(&w.auth);
    one_behind.peer_cas.pop();
    assert!(matches!(
        w.next(&r, Some(&one_behind)),
        CertStep::Wait { .. }
    ));
    assert_eq!(w.next(&r, None), CertStep::ReissueFromNewCa);
    let before = loaded(&w.auth);
    w.run(&CertStep::ReissueFromNewCa, &r);
    let new_ca = w.auth.cas[1].info.sha256.clone();
    assert!(
        w.auth
            .leaves()
            .all(|l| l.issuer.as_deref() == Some(new_ca.as_str()))
    );
    // (2) → (3) only once every member serves the new leaves.
    assert!(matches!(w.next(&r, Some(&before)), CertStep::Wait { .. }));
    assert_eq!(w.next(&r, None), CertStep::DropOldCa);
    w.run(&CertStep::DropOldCa, &r);
    assert_eq!(w.auth.bundle(), vec![new_ca]);
    assert!(!w.auth.bundle().contains(&old_ca));
    assert_eq!(w.auth.phase, Phase::Idle);
    assert_eq!(w.next(&r, None), CertStep::Idle);
}

#[test]
fn a_ca_near_expiry_rotates_by_itself() {
    let mut w = World::new("enabled: true\nvalidity: 2400h\ncaValidity: 2400h\nrenewBefore: 48h\n");
    w.now += Duration::from_secs(98 * DAY + DAY / 2);
    // Leaves and CA are both due: the CA goes first (its rotation re-issues the leaves).
    let step = w.next(&Requests::default(), None);
    assert!(matches!(step, CertStep::AddCa { .. }), "{step:?}");
}

#[test]
fn expired_material_is_replaced_without_waiting_for_members() {
    let mut w = World::new("enabled: true\nvalidity: 240h\ncaValidity: 480h\nrenewBefore: 48h\n");
    let unreachable: Vec<(String, Option<Loaded>)> = vec![("m0".into(), None)];
    w.now += Duration::from_secs(11 * DAY);
    let unix = crate::certs::issue::unix(w.now);
    let step = next(
        &w.auth,
        &w.s.policy,
        &Requests::default(),
        &unreachable,
        unix,
    );
    assert!(
        matches!(step, CertStep::Recover { new_ca: false, .. }),
        "{step:?}"
    );
    w.now += Duration::from_secs(20 * DAY);
    let unix = crate::certs::issue::unix(w.now);
    let step = next(
        &w.auth,
        &w.s.policy,
        &Requests::default(),
        &unreachable,
        unix,
    );
    assert!(
        matches!(step, CertStep::Recover { new_ca: true, .. }),
        "{step:?}"
    );
    w.run(&step, &Requests::default());
    assert_eq!(w.auth.cas.len(), 1);
    let unix = crate::certs::issue::unix(w.now);
    assert!(w.auth.leaves().all(|l| l.info.not_after > unix));
}

#[test]
fn a_member_that_does_not_answer_holds_the_rotation_but_not_renewals() {
    let mut w = World::new("enabled: true\n");
    let r = Requests {
        rotate_certs: Some("x".into()),
        rotate_ca: Some("y".into()),
    };
    let mut m = members(&loaded(&w.auth));
    m[1].1 = None;
    let unix = crate::certs::issue::unix(w.now);
    // Adding trust is safe with a member down: it reads the current files when it is back.
    let step = next(&w.auth, &w.s.policy, &r, &m, unix);
    assert!(matches!(step, CertStep::AddCa { .. }), "{step:?}");
    w.run(&step, &r);
    // Re-issuing from the new CA is not: the member might not trust it yet.
    let mut m = members(&loaded(&w.auth));
    m[1].1 = None;
    match next(&w.auth, &w.s.policy, &r, &m, unix) {
        CertStep::Wait { reason } => assert!(reason.contains("m1 (not answering)"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// An expiry in the middle of a CA rotation ends it: new leaves from the signing CA, and the
/// old CA, whose leaves expired with it, leaves the bundle.
#[test]
fn recovery_in_a_rotation_keeps_only_the_signing_ca() {
    let mut w = World::new("enabled: true\nvalidity: 2400h\ncaValidity: 240h\nrenewBefore: 48h\n");
    let r = Requests {
        rotate_certs: None,
        rotate_ca: Some("1".into()),
    };
    w.now += Duration::from_secs(5 * DAY);
    let step = w.next(&r, None);
    assert!(matches!(step, CertStep::AddCa { .. }), "{step:?}");
    w.run(&step, &r);
    assert_eq!(w.auth.phase, Phase::TrustBoth);
    // Stuck in TrustBoth (a member never confirms) until the old CA expires.
    w.now += Duration::from_secs(6 * DAY);
    let stuck = Loaded::default();
    let step = w.next(&r, Some(&stuck));
    assert!(
        matches!(step, CertStep::Recover { new_ca: false, .. }),
        "{step:?}"
    );
    let signing = w.auth.cas[1].info.sha256.clone();
    w.run(&step, &r);
    assert_eq!(w.auth.bundle(), vec![signing.clone()]);
    assert_eq!(w.auth.phase, Phase::Idle);
    assert!(
        w.auth
            .leaves()
            .all(|l| l.issuer.as_deref() == Some(signing.as_str()))
    );
}

#[test]
fn new_names_or_a_new_algorithm_reissue_the_leaves() {
    let mut w = World::new("enabled: true\n");
    w.s.policy.subjects = 42;
    let step = w.next(&Requests::default(), None);
    match &step {
        CertStep::RenewLeaves { reason } => assert!(reason.contains("names"), "{reason}"),
        other => panic!("{other:?}"),
    }
    w.run(&step, &Requests::default());
    assert_eq!(w.auth.issued_for, 42);
    assert_eq!(w.next(&Requests::default(), None), CertStep::Idle);
}
