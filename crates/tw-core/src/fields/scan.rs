//! The row parse's fast path: the selected fields of the plain JSON objects most events are,
//! read with [`crate::scan::Cursor`] instead of serde_json's visitors, which cost ~13,000
//! instructions per CloudTrail event for ten rule paths (`tw-detect`'s mixed workload).
//!
//! It walks the document along the selection's tree: a key that no path goes through is
//! stepped over with its syntax checked, a selected scalar is made a `Value` in place, and a
//! selected object or array (rare) is handed to serde_json as its slice. It gives up
//! ([`Unsupported`]) on escaped keys, a top level that is not an object, the root path, deep
//! nesting and anything the cursor does not read; [`SlotTree::parse`] then reads the document
//! with serde_json from the start. So for every input the row is serde_json's or the fast path
//! gave none (the mutation test in `mod.rs` and `tests/real_events.rs` check that), and what it
//! accepts is valid JSON.

use super::{Row, SlotNode, SlotTree};
use crate::scan::{Cursor, MAX_SKIP_DEPTH, Scanned, Unsupported};

impl SlotTree {
    /// Fills `row` from `text` as the serde_json walk would, or gives up (the row then holds
    /// part of the values and is discarded).
    pub(super) fn scan(&self, text: &str, row: &mut Row) -> Scanned<()> {
        if self.root.slot.is_some() {
            // The whole event is selected (keyword rules): serde_json builds it.
            return Err(Unsupported);
        }
        let mut walk = Walk {
            tree: self,
            cursor: Cursor::new(text),
            row,
        };
        walk.cursor.skip_space();
        walk.cursor.expect(b'{')?;
        walk.row.object = true;
        walk.object(&self.root, 0)?;
        walk.cursor.skip_space();
        if walk.cursor.is_done() {
            Ok(())
        } else {
            Err(Unsupported)
        }
    }
}

struct Walk<'t, 'r> {
    tree: &'t SlotTree,
    cursor: Cursor<'t>,
    row: &'r mut Row,
}

impl Walk<'_, '_> {
    /// The members of an object at `depth` (0: the event) whose `{` was read, up to and
    /// including its `}`, with `node` the selection's node for the object.
    fn object(&mut self, node: &SlotNode, depth: usize) -> Scanned<()> {
        self.cursor.skip_space();
        if self.cursor.peek() == Some(b'}') {
            self.cursor.advance();
            return Ok(());
        }
        loop {
            let key = self.cursor.plain_string()?;
            self.cursor.skip_space();
            self.cursor.expect(b':')?;
            self.cursor.skip_space();
            if let Some(child) = node.children.get(key) {
                self.row.clear(child);
                self.member(child, depth + 1)?;
            } else if let Some(&slot) = (depth == 0).then(|| self.tree.literal.get(key)).flatten() {
                // A top-level key spelled like a dotted path: that path's fallback.
                let value = self.cursor.value(depth + 1)?;
                self.row.literal.retain(|(kept, _)| *kept != slot);
                self.row.literal.push((slot, value));
            } else {
                self.cursor.skip_value(depth + 1)?;
            }
            if !self.cursor.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }

    /// The value of a key some path goes through, at `depth`.
    fn member(&mut self, node: &SlotNode, depth: usize) -> Scanned<()> {
        if node.slot.is_some() {
            // A path ends here: the value is kept whole, and deeper paths read from it.
            let value = self.cursor.value(depth)?;
            self.row.fill(node, value);
            return Ok(());
        }
        match self.cursor.peek().ok_or(Unsupported)? {
            b'{' if depth < MAX_SKIP_DEPTH => {
                self.cursor.advance();
                self.object(node, depth)
            }
            b'[' => {
                // Paths go through an array by index: read it whole and walk it.
                let value = self.cursor.value(depth)?;
                self.row.fill(node, value);
                Ok(())
            }
            // A scalar where the paths expect an object: none of them resolves. serde_json
            // reads it as a value there (not skipped): strings with escapes, floats (which can
            // be out of range) and large integers are left to it.
            b'"' => self.cursor.plain_string().map(drop),
            b'-' | b'0'..=b'9' => self.cursor.integer().map(drop),
            b't' => self.cursor.word("true"),
            b'f' => self.cursor.word("false"),
            b'n' => self.cursor.word("null"),
            _ => Err(Unsupported),
        }
    }
}
