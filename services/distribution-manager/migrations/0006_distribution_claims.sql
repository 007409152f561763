-- A distribution job is claimed by a state change, never by a read followed by an in-memory check: the worker
-- that sets `claimed_by` to its own run id (compare and set) runs the job; finishing, failing or scheduling a
-- retry clears the claim in the same statement. A claim left by an earlier run of the process (killed) is free.
ALTER TABLE distributions ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
