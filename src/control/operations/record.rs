//! The optional records several command families stage the same way (external SSL, custom CA,
//! external service, lookup user, mutual SSL): where a record is in the state ([`RecordSlot`]), how
//! `list` reads and words it ([`RecordList`], [`list_record`]), and how `disable`/`delete` stages its
//! removal ([`stage_removal`]).

use super::{CommandError, Context, Output, Staging, prune};
use crate::control::state::security::Change;
use crate::control::state::{AppliedState, PendingChanges, StateStore};

/// One of the optional records a command family stages: where it is in the applied state and in
/// the pending changes.
pub(crate) struct RecordSlot<T> {
    /// The record of a state, if it has one.
    pub applied: fn(&AppliedState) -> Option<&T>,
    /// The record's staged change.
    pub pending: fn(&mut PendingChanges) -> &mut Option<Change<T>>,
}

impl<T> RecordSlot<T> {
    /// Whether `state` has the record.
    fn present(&self, state: &AppliedState) -> bool {
        (self.applied)(state).is_some()
    }

    /// Reads the applied record and any staged change, each with the details `detail` reads.
    pub(crate) fn list<D>(
        &self,
        ctx: &Context,
        detail: impl Fn(&StateStore, &T) -> Result<D, CommandError>,
    ) -> Result<RecordList<D>, CommandError> {
        let store = ctx.store()?;
        let (applied, mut pending) = (store.applied()?, store.pending()?);
        RecordList::read(
            (self.applied)(&applied),
            (self.pending)(&mut pending).as_ref(),
            |record| detail(&store, record),
        )
    }
}

/// How `list` words a staged record.
pub(crate) struct RecordListing<'a, T> {
    /// The heading.
    pub title: &'a str,
    /// The line when none is applied.
    pub none: &'a str,
    /// What a staged record will do, e.g. "add ca.pem".
    pub staged: &'a dyn Fn(&T) -> String,
    /// What a staged removal will do, e.g. "delete".
    pub removed: &'a str,
}

/// The answer of a `list` of an optional record: the applied one and any staged change, each with
/// the details a listing shows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordList<T> {
    /// The applied record, if any.
    pub applied: Option<T>,
    /// The staged change, if any.
    pub pending: Option<Change<T>>,
}

impl<T> RecordList<T> {
    /// Reads the details of the applied record and of a staged one with `detail`.
    pub(crate) fn read<R>(
        applied: Option<&R>,
        pending: Option<&Change<R>>,
        detail: impl Fn(&R) -> Result<T, CommandError>,
    ) -> Result<RecordList<T>, CommandError> {
        Ok(RecordList {
            applied: applied.map(&detail).transpose()?,
            pending: match pending {
                Some(Change::Set(r)) => Some(Change::Set(detail(r)?)),
                Some(Change::Remove) => Some(Change::Remove),
                None => None,
            },
        })
    }
}

/// Renders a [`RecordList`]: the applied record, then any staged change, each record printed with
/// `print(out, record, indent)`.
pub(crate) fn list_record<T>(
    out: &Output,
    how: RecordListing<'_, T>,
    list: &RecordList<T>,
    print: impl Fn(&Output, &T, &str),
) {
    say!(out, "{}", how.title);
    match &list.applied {
        Some(record) => print(out, record, "  "),
        None => say!(out, "  {}", how.none),
    }
    match &list.pending {
        Some(Change::Set(record)) => {
            say!(
                out,
                "  pending: {}; run 'pgssl pending-changes apply'",
                (how.staged)(record)
            );
            print(out, record, "    ");
        }
        Some(Change::Remove) => say!(
            out,
            "  pending: {}; run 'pgssl pending-changes apply'",
            how.removed
        ),
        None => {}
    }
}

/// What staging the removal of a record found.
pub(crate) enum Removal {
    /// Neither applied nor staged: nothing was staged.
    Absent,
    /// Only staged: the staged record was dropped.
    DroppedStaged,
    /// Applied: its removal is staged.
    Staged,
}

/// Stages removing a record (or drops one that is only staged), and removes the copies and secrets
/// nothing refers to any more.
pub(crate) fn stage_removal<T>(
    ctx: &Context,
    slot: &RecordSlot<T>,
) -> Result<Removal, CommandError> {
    let mut staging = Staging::begin(ctx.store()?)?;
    if !slot.present(&staging.next()) {
        return Ok(Removal::Absent);
    }
    *(slot.pending)(&mut staging.pending) = Some(Change::Remove);
    staging.save()?;
    prune(&staging.store, &ctx.out);
    Ok(if slot.present(&staging.applied) {
        Removal::Staged
    } else {
        Removal::DroppedStaged
    })
}
