//! What a committed group wrote, handed from the overlay to the segment index and the writer's
//! cache once the commit succeeded.

use eddy_model::profile::Profile;
use eddy_segments::Index;
use roaring::RoaringBitmap;

/// What a group wrote, handed to the index and the cache after the commit.
#[derive(Debug, Default)]
pub struct Written {
    /// Profiles by (workspace, id); `None` when deleted.
    pub profiles: Vec<((u32, u32), Option<Profile>)>,
    /// Identifier index keys and their new values; `None` when deleted.
    pub idents: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Cohort membership changes by (workspace, partner, cohort id).
    pub members: Vec<((u32, String, String), CohortDelta)>,
    /// The profiles as encoded for storage, for the indexer.
    pub encoded: crate::indexer::Batch,
}

/// One cohort's membership changes in one group, relative to the committed members.
#[derive(Debug, Default, Clone)]
pub struct CohortDelta {
    /// Ids that joined (were not members).
    pub added: RoaringBitmap,
    /// Ids that left (were members).
    pub removed: RoaringBitmap,
}

impl CohortDelta {
    pub(crate) fn contains(&self, committed: Option<&RoaringBitmap>, id: u32) -> bool {
        if committed.is_some_and(|c| c.contains(id)) {
            !self.removed.contains(id)
        } else {
            self.added.contains(id)
        }
    }

    pub(crate) fn set(&mut self, committed: Option<&RoaringBitmap>, id: u32, member: bool) {
        let was = committed.is_some_and(|c| c.contains(id));
        match (member, was) {
            (true, true) => {
                self.removed.remove(id);
            }
            (true, false) => {
                self.added.insert(id);
            }
            (false, true) => {
                self.removed.insert(id);
            }
            (false, false) => {
                self.added.remove(id);
            }
        }
    }
}

impl Written {
    /// Applies this committed group's cohort membership changes to the index.
    pub fn feed_members(&self, index: &mut Index) {
        for ((ws, partner, cohort_id), delta) in &self.members {
            index.workspace_mut(*ws).apply_members(
                partner,
                cohort_id,
                &delta.added,
                &delta.removed,
            );
        }
    }
}
