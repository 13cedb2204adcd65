"""What is removed from the pool before selection, and why: blocklists (content and perceptual hashes, URLs and
domains), quality pre-filters (image size and sharpness, caption checks, image-text agreement) and pool-wide
dedup (exact copies, then semantic near-duplicates). Each removal is a quarantine row with its stage and reason,
counted per source."""
