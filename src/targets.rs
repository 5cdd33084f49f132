//! Where batch_get writes: the caller's segments of every value of a batch.

/// Where batch_get writes: for each value, the caller's segments, in order.
///
/// Flattened (one vector of segments plus value boundaries) so building it costs one allocation
/// per call, not one per value.
#[derive(Debug, Default)]
pub struct ReadTargets<'a> {
    pub(crate) segments: Vec<&'a mut [u8]>,
    pub(crate) bounds: Vec<usize>,
}

impl<'a> ReadTargets<'a> {
    /// Room for `values` values of `segments` segments in all.
    pub fn with_capacity(values: usize, segments: usize) -> Self {
        let mut bounds = Vec::with_capacity(values + 1);
        bounds.push(0);
        ReadTargets { segments: Vec::with_capacity(segments), bounds }
    }

    /// As [`ReadTargets::with_capacity`], but an error instead of an abort when that much memory
    /// cannot be had.
    pub fn try_with_capacity(values: usize, segments: usize) -> crate::Result<Self> {
        let mut t = ReadTargets::default();
        let fail = |_| crate::Error::invalid_argument(format!("cannot allocate room for {values} values of {segments} segments"));
        t.bounds.try_reserve_exact(values.saturating_add(1)).map_err(fail)?;
        t.segments.try_reserve_exact(segments).map_err(fail)?;
        t.bounds.push(0);
        Ok(t)
    }

    /// Adds a value made of `segments`.
    pub fn push_value(&mut self, segments: impl IntoIterator<Item = &'a mut [u8]>) {
        if self.bounds.is_empty() {
            self.bounds.push(0);
        }
        self.segments.extend(segments);
        self.bounds.push(self.segments.len());
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total length of value `i`'s segments.
    pub fn value_len(&self, i: usize) -> u64 {
        self.segments[self.bounds[i]..self.bounds[i + 1]].iter().map(|s| s.len() as u64).sum()
    }

    /// Moves the segments of the values `idx` out (leaving empty slices in their place), in
    /// that order; [`ReadTargets::put_back`] returns them.
    pub(crate) fn take_values(&mut self, idx: &[usize]) -> ReadTargets<'a> {
        let count = idx.iter().map(|i| self.bounds[i + 1] - self.bounds[*i]).sum();
        let mut part = ReadTargets::with_capacity(idx.len(), count);
        for i in idx {
            part.push_value(self.segments[self.bounds[*i]..self.bounds[i + 1]].iter_mut().map(std::mem::take));
        }
        part
    }

    /// Puts back what [`ReadTargets::take_values`] took out.
    pub(crate) fn put_back(&mut self, idx: &[usize], part: ReadTargets<'a>) {
        let mut segments = part.segments.into_iter();
        for i in idx {
            for j in self.bounds[*i]..self.bounds[i + 1] {
                self.segments[j] = segments.next().expect("as many segments as were taken");
            }
        }
    }
}
