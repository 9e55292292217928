//! Property targets for the answer decoders, run briefly with the tests and longer by hand
//! (`PROPTEST_CASES=200000 cargo test -p rollcall-cluster proto::fuzz`): the hand reader of an
//! answer only accepts what the generic decoder accepts, the shape check agrees with the
//! generic decoder, and a partial that decodes holds only whole answers and ids.

use super::*;
use proptest::prelude::*;

fn answer() -> impl Strategy<Value = NodeAnswer> {
    (
        proptest::option::of(proptest::collection::vec(
            proptest::collection::vec(".{0,12}", 0..4),
            0..4,
        )),
        proptest::collection::vec(".{0,20}", 0..3),
    )
        .prop_map(|(rows, problems)| NodeAnswer { rows, problems })
}

/// Written bytes, then bent: a byte changed, cut short, or a byte added.
fn bend(mut b: Vec<u8>, at: usize, byte: u8, how: u8) -> Vec<u8> {
    if b.is_empty() {
        return b;
    }
    let at = at % b.len();
    match how {
        0 => b[at] = byte,
        1 => b.truncate(at),
        2 => b.insert(at, byte),
        _ => {}
    }
    b
}

fn answers_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let generic = rmp_serde::from_slice::<NodeAnswer>(bytes);
    if EncodedAnswer::plain(bytes) {
        prop_assert!(generic.is_ok(), "read by hand but not by the decoder");
    }
    prop_assert_eq!(EncodedAnswer::check(bytes).is_ok(), generic.is_ok());
    Ok(())
}

fn partial_is_whole(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(p) = rollcall_runtime::wire::decode_body::<Partial>(bytes) {
        for (a, who) in p.groups() {
            prop_assert!(rmp_serde::from_slice::<NodeAnswer>(a).is_ok());
            prop_assert!(IdList::check(who).is_ok());
        }
        // Every group that decoded carries its tag (read without a panic).
        prop_assert_eq!(p.tagged_groups().count(), p.groups().count());
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_bytes_as_an_answer_or_a_partial(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        answers_agree(&bytes)?;
        partial_is_whole(&bytes)?;
    }

    #[test]
    fn bent_answers(a in answer(), at in any::<usize>(), byte in any::<u8>(), how in 0..4u8) {
        let written = EncodedAnswer::new(&a);
        prop_assert!(EncodedAnswer::plain(&written.0));
        prop_assert_eq!(written.decode().ok(), Some(a));
        answers_agree(&bend(written.0, at, byte, how))?;
    }

    #[test]
    fn bent_partials(
        answers in proptest::collection::vec((answer(), "[a-f0-9]{1,8}"), 0..5),
        at in any::<usize>(),
        byte in any::<u8>(),
        how in 0..4u8,
    ) {
        let mut p = Partial::default();
        for (a, id) in &answers {
            p.add(&NodeId(id.as_str().into()), &EncodedAnswer::new(a).into());
        }
        let bytes = rollcall_runtime::wire::encode_body(&p).unwrap_or_default();
        let back: Partial = rollcall_runtime::wire::decode_body(&bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.len(), answers.len());
        partial_is_whole(&bend(bytes, at, byte, how))?;
    }
}
