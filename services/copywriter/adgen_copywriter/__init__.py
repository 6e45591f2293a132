"""The copywriter service: Korean ad copy and model-aware image prompts, from a template or an LLM."""
