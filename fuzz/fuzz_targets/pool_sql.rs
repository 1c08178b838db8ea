//! What transaction pooling reads from a statement's text (`sql::effects`, `sql::statement_count`):
//! never a panic; a SET's value is text the statement holds; at most one effect per statement (and
//! an advisory-lock pin); a closed comment in front changes nothing; two plain texts joined by `;`
//! have the effects of each; and ASCII case changes nothing but the values' case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::pooling::PinReason;
use pgssl::proxy::pooling::sql::{self, Effect};

/// Effects without the advisory-lock pin (one for the whole text, appended last), and whether it was.
fn split_advisory(effects: Vec<Effect>) -> (Vec<Effect>, bool) {
    let advisory = effects.contains(&Effect::Pin(PinReason::AdvisoryLock));
    let rest = effects
        .into_iter()
        .filter(|e| *e != Effect::Pin(PinReason::AdvisoryLock))
        .collect();
    (rest, advisory)
}

fn lowered(effects: &[Effect]) -> Vec<Effect> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Set(n, v) => Effect::Set(n.to_lowercase(), v.to_lowercase()),
            Effect::Reset(n) => Effect::Reset(n.to_lowercase()),
            Effect::Deallocate(n) => Effect::Deallocate(n.to_lowercase()),
            other => other.clone(),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    // The tracker reads message text this way.
    let text = String::from_utf8_lossy(rest).into_owned();
    let effects = sql::effects(&text);
    let count = sql::statement_count(&text);
    assert!(
        effects.len() <= count + 1,
        "{effects:?} from {count} statements"
    );
    for e in &effects {
        if let Effect::Set(_, value) = e {
            assert!(
                text.contains(value.as_str()),
                "{value:?} is not in the text"
            );
            assert_eq!(value.trim(), value);
        }
    }

    let commented = format!("/* pgssl */ {text}");
    assert_eq!(sql::effects(&commented), effects);
    assert_eq!(sql::statement_count(&commented), count);

    // Text that opens no quote, comment or dollar quote ends its statements where the `;` is.
    let plain = |s: &str| !s.bytes().any(|b| b"'\"$-/;".contains(&b));
    let cut = usize::from(at).min(text.len());
    if let (Some(a), Some(b)) = (text.get(..cut), text.get(cut..))
        && plain(a)
    {
        let joined = format!("{a};{b}");
        let (whole, whole_advisory) = split_advisory(sql::effects(&joined));
        let (first, first_advisory) = split_advisory(sql::effects(a));
        let (second, second_advisory) = split_advisory(sql::effects(b));
        assert_eq!(whole, [first, second].concat(), "{joined:?}");
        assert_eq!(whole_advisory, first_advisory || second_advisory);
        assert_eq!(
            sql::statement_count(&joined),
            sql::statement_count(a) + sql::statement_count(b)
        );
    }

    if !text.bytes().any(|b| b"'\"$".contains(&b)) {
        let upper = text.to_ascii_uppercase();
        assert_eq!(
            lowered(&sql::effects(&upper)),
            lowered(&effects),
            "{upper:?}"
        );
    }
});
