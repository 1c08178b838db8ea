//! The statements pgssl has prepared on one backend, least recently used first out.

use std::collections::HashMap;

use bytes::Bytes;

/// A backend's prepared statements (pgssl's names), each with when it was last used.
#[derive(Debug, Default)]
pub struct Statements {
    used: HashMap<Bytes, u64>,
    clock: u64,
}

impl Statements {
    /// Whether the backend has `name`; marks it used.
    pub fn touch(&mut self, name: &Bytes) -> bool {
        self.clock += 1;
        match self.used.get_mut(name) {
            Some(at) => {
                *at = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared (and used now).
    pub fn insert(&mut self, name: Bytes) {
        self.clock += 1;
        self.used.insert(name, self.clock);
    }

    /// Forgets `name` (its Parse failed, or it was closed).
    pub fn remove(&mut self, name: &Bytes) {
        self.used.remove(name);
    }

    /// Takes out the least recently used statement, to be closed.
    pub fn evict(&mut self) -> Option<Bytes> {
        let oldest = self.used.iter().min_by_key(|(_, at)| **at)?.0.clone();
        self.used.remove(&oldest);
        Some(oldest)
    }

    /// Forgets them all (the backend dropped them: DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.used.clear();
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut s = Statements::default();
        let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
        s.insert(a.clone());
        s.insert(b.clone());
        s.insert(c.clone());
        assert!(s.touch(&a));
        assert_eq!(s.evict(), Some(b.clone()));
        assert!(!s.touch(&b));
        assert_eq!(s.evict(), Some(c));
        s.remove(&a);
        assert!(s.is_empty());
        assert_eq!(s.evict(), None);
    }
}
