"""Model kinds and model folders: loading and saving (loading), the zero-shot teacher (zero_shot), SetFit's
contrastive tuning (contrastive), the drift monitor's view of the production model (monitor), and models
shipped as split registry packages, reassembled by `make base-teacher` (base_teacher)."""
