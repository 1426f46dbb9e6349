//! The quorum decisions, table-style.

use super::*;

fn up(id: u64, leader: u64, raft_index: u64) -> MemberHealth {
    MemberHealth {
        id,
        name: format!("m{id}"),
        state: Ok(MemberStatus {
            leader,
            raft_index,
            version: "3.4.23".to_owned(),
        }),
    }
}

fn down(id: u64) -> MemberHealth {
    MemberHealth {
        id,
        name: format!("m{id}"),
        state: Err("connection refused".to_owned()),
    }
}

#[test]
fn a_member_may_stop_only_when_every_member_is_healthy_and_one_can_be_lost() {
    let cases: Vec<(&str, Vec<MemberHealth>, u64, bool)> = vec![
        (
            "three healthy",
            vec![up(1, 1, 9), up(2, 1, 9), up(3, 1, 9)],
            2,
            true,
        ),
        (
            "another down",
            vec![up(1, 1, 9), up(2, 1, 9), down(3)],
            2,
            false,
        ),
        (
            "itself down",
            vec![up(1, 1, 9), down(2), up(3, 1, 9)],
            2,
            false,
        ),
        ("single member", vec![up(1, 1, 9)], 1, false),
        ("two members", vec![up(1, 1, 9), up(2, 1, 9)], 2, false),
        (
            "five healthy",
            (1..=5).map(|i| up(i, 1, 9)).collect(),
            4,
            true,
        ),
        (
            "not a member",
            vec![up(1, 1, 9), up(2, 1, 9), up(3, 1, 9)],
            7,
            false,
        ),
    ];
    for (name, members, local, allowed) in cases {
        assert_eq!(may_stop(&members, local).is_ok(), allowed, "{name}");
    }
}

#[test]
fn a_refusal_names_the_unhealthy_member() {
    let e = may_stop(&[up(1, 1, 9), up(2, 1, 9), down(3)], 1).expect_err("refused");
    assert!(e.to_string().contains("m3"), "{e}");
    let e = may_stop(&[up(1, 1, 9), up(2, 1, 9)], 1).expect_err("refused");
    assert!(matches!(e, Refusal::NoSpare { quorum: 2, .. }), "{e}");
}

#[test]
fn leadership_moves_to_the_most_caught_up_other_member_only_from_the_leader() {
    let members = [up(1, 1, 100), up(2, 1, 98), up(3, 1, 99)];
    assert_eq!(successor(&members, 1), Some(3));
    assert_eq!(successor(&members, 2), None, "a follower keeps the leader");
    let members = [up(1, 1, 100), down(2), up(3, 1, 90)];
    assert_eq!(
        successor(&members, 1),
        Some(3),
        "never to a member that is down"
    );
}

#[test]
fn a_restarted_member_is_back_when_healthy_and_near_the_leader() {
    let bound = 10;
    let cases: Vec<(&str, Vec<MemberHealth>, bool)> = vec![
        (
            "level",
            vec![up(1, 2, 50), up(2, 2, 50), up(3, 2, 50)],
            true,
        ),
        (
            "a little behind",
            vec![up(1, 2, 45), up(2, 2, 50), up(3, 2, 50)],
            true,
        ),
        (
            "far behind",
            vec![up(1, 2, 5), up(2, 2, 50), up(3, 2, 50)],
            false,
        ),
        (
            "not answering",
            vec![down(1), up(2, 2, 50), up(3, 2, 50)],
            false,
        ),
        (
            "its leader gone",
            vec![up(1, 3, 50), up(2, 2, 50), down(3)],
            false,
        ),
        (
            "ahead of a stale sample",
            vec![up(1, 2, 60), up(2, 2, 50), up(3, 2, 50)],
            true,
        ),
    ];
    for (name, members, back) in cases {
        assert_eq!(caught_up(&members, 1, bound).is_ok(), back, "{name}");
    }
}
