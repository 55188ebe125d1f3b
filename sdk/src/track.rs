//! [`Track`]: an iterator adaptor that reports progress per item, the loop
//! every batch operation writes by hand (seed 000's per-certificate loop:
//! progress, a message per item, and `{completed_certs, total_certs}`).

use std::iter::FusedIterator;

use serde_json::Value;

use crate::Context;

/// Reports progress per item of the iterator it wraps; made by
/// [`Context::track`].
///
/// When the loop asks for item *k* of *n*, the `k - 1` before it are done: the
/// context reports `(k - 1) / n` of its span, with the item's message, and the
/// details get `{"completed": k - 1, "total": n}` (merged into the details the
/// plugin set, not replacing them). When the items run out it reports the end
/// of the span, `"n of n done"`. An item the loop leaves early (`?`, `break`)
/// is never counted as done.
///
/// The total comes from the iterator's size hint when it is exact (slices,
/// `Vec`s, ranges, maps) or from [`Track::total`]. Without one, progress stays
/// at the start of the span until the end and only the count moves.
pub struct Track<'c, I: Iterator> {
    ctx: &'c Context,
    items: I,
    /// How many items there are, once known.
    total: Option<u64>,
    /// Items finished: all those handed out before the current one.
    completed: u64,
    state: State,
    /// The message for an item; "item k of n" without one.
    message: Option<ItemMessage<'c, I::Item>>,
    /// The detail keys for the completed and total counts.
    keys: (String, String),
}

/// Makes the progress message for an item.
type ItemMessage<'c, T> = Box<dyn FnMut(&T) -> String + 'c>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Done,
}

impl<'c, I: Iterator> Track<'c, I> {
    pub(crate) fn new(ctx: &'c Context, items: I) -> Self {
        Track {
            ctx,
            items,
            total: None,
            completed: 0,
            state: State::NotStarted,
            message: None,
            keys: ("completed".to_owned(), "total".to_owned()),
        }
    }

    /// Sets the number of items, for an iterator that cannot tell (a filter,
    /// a reader's lines).
    pub fn total(mut self, total: usize) -> Self {
        self.total = Some(total as u64);
        self
    }

    /// Sets the progress message for each item, e.g.
    /// `.message(|user| format!("issuing a certificate for {}", user.name))`.
    pub fn message(mut self, message: impl FnMut(&I::Item) -> String + 'c) -> Self {
        self.message = Some(Box::new(message));
        self
    }

    /// Names the detail keys of the two counts, e.g.
    /// `.details_keys("completed_certs", "total_certs")`.
    pub fn details_keys(mut self, completed: &str, total: &str) -> Self {
        self.keys = (completed.to_owned(), total.to_owned());
        self
    }

    fn report(&self, message: &str) {
        let (done, of) = match self.total {
            Some(total) if self.state == State::Running => (self.completed, total),
            None if self.state == State::Running => (0, 1),
            _ => (1, 1),
        };
        self.ctx.report(done, of, message);
        let mut fields = vec![(self.keys.0.clone(), Value::from(self.completed))];
        if let Some(total) = self.total {
            fields.push((self.keys.1.clone(), Value::from(total)));
        }
        self.ctx.merge_details(fields);
    }
}

impl<I: Iterator> Iterator for Track<'_, I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        match self.state {
            State::Done => return None,
            State::Running => self.completed += 1,
            State::NotStarted => {
                self.state = State::Running;
                if self.total.is_none()
                    && let (low, Some(high)) = self.items.size_hint()
                    && low == high
                {
                    self.total = Some(low as u64);
                }
            }
        }
        match self.items.next() {
            Some(item) => {
                let message = match &mut self.message {
                    Some(message) => message(&item),
                    None => match self.total {
                        Some(total) => format!("item {} of {total}", self.completed + 1),
                        None => format!("item {}", self.completed + 1),
                    },
                };
                self.report(&message);
                Some(item)
            }
            None => {
                self.state = State::Done;
                let total = *self.total.get_or_insert(self.completed);
                self.report(&format!("{} of {total} done", self.completed));
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.state == State::Done { (0, Some(0)) } else { self.items.size_hint() }
    }
}

impl<I: Iterator> FusedIterator for Track<'_, I> {}
