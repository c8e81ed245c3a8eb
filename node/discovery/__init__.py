"""Discovery without a company: gossip of signed store announcements, a crawler, a full-text directory, mirrors."""
