"""Model kinds and model folders: loading and saving (loading), the zero-shot teacher (zero_shot), SetFit's
contrastive tuning (contrastive) and the drift monitor's view of the production model (monitor)."""
