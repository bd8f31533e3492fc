//! The node arena behind the subscription trie and the retained-topic tree.
//!
//! Nodes live in one `Vec` and refer to each other by [`NodeId`]; a freed node is reset
//! to its default and its id pushed on a free list for reuse. That keeps a tree of a
//! million nodes in a few large allocations and makes freeing a branch cheap. Which ids
//! are reachable is the owning tree's business (see its `# Invariants`).

/// Index of a node in an [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NodeId(usize);

/// The root: created with the arena and never freed.
pub(super) const ROOT: NodeId = NodeId(0);

/// A `Vec` of nodes plus a free list. Node 0 is the root.
#[derive(Debug, Clone)]
pub(super) struct Arena<N> {
    nodes: Vec<N>,
    free: Vec<NodeId>,
}

impl<N: Default> Default for Arena<N> {
    fn default() -> Self {
        Self { nodes: vec![N::default()], free: Vec::new() }
    }
}

impl<N: Default> Arena<N> {
    /// A fresh default node, reusing a freed slot when there is one.
    pub(super) fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(N::default());
                NodeId(self.nodes.len() - 1)
            }
        }
    }

    /// Resets `id` to a default node and makes it available to `alloc`. The caller has
    /// already unlinked it; the root is never released.
    pub(super) fn release(&mut self, id: NodeId) {
        debug_assert_ne!(id, ROOT);
        *self.get_mut(id) = N::default();
        self.free.push(id);
    }
}

impl<N> Arena<N> {
    // Ids come only from the owning tree's edges, which point at live nodes, so the
    // index is in bounds; a bad id is a bug in the tree, not an input.
    pub(super) fn get(&self, id: NodeId) -> &N {
        &self.nodes[id.0]
    }

    pub(super) fn get_mut(&mut self, id: NodeId) -> &mut N {
        &mut self.nodes[id.0]
    }

    /// Live nodes, the root included.
    pub(super) fn live(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Every slot, freed ones (which hold default nodes) included.
    pub(super) fn slots(&self) -> impl Iterator<Item = &N> {
        self.nodes.iter()
    }

    /// Slots ever allocated, freed ones included (tests check that freed slots are reused).
    #[cfg(test)]
    pub(super) fn slot_count(&self) -> usize {
        self.nodes.len()
    }
}
