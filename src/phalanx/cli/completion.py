"""``phalanx completion bash|zsh``: a shell completion script made from the parser itself, so
it never drifts from the commands and flags. Install: ``eval "$(phalanx completion bash)"``
in ``~/.bashrc`` (zsh: ``eval "$(phalanx completion zsh)"`` in ``~/.zshrc``)."""

from __future__ import annotations

import argparse

__all__ = ["SHELLS", "completion_script"]

SHELLS = ("bash", "zsh")


def _words(parser: argparse.ArgumentParser) -> tuple[dict[str, str], dict[str, str]]:
    """Each command (``""``: the top level) -> the words after it (its flags, its own
    subcommands); and ``COMMAND:FLAG`` -> the choices of a flag that has them."""
    words: dict[str, str] = {}
    choices: dict[str, str] = {}

    def walk(name: str, p: argparse.ArgumentParser) -> None:
        found: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += sorted(action.choices)
                if not name:
                    for sub_name, sub in action.choices.items():
                        walk(sub_name, sub)
                continue
            found += action.option_strings
            if action.choices and not action.option_strings:  # completion bash|zsh
                found += map(str, action.choices)
            elif action.choices:
                for flag in action.option_strings:
                    choices[f"{name}:{flag}"] = " ".join(map(str, action.choices))
        words[name] = " ".join(found)

    walk("", parser)
    return words, choices


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    words, choices = _words(parser)
    cases = "\n".join(f'        {name}) words="{w}" ;;' for name, w in words.items() if name)
    flag_cases = "\n".join(f'        "{key}") words="{w}" ;;' for key, w in choices.items())
    body = f"""_phalanx() {{
    local cur cmd words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break ;; esac
    done
    case "$cmd" in
        "") words="{words[""]}" ;;
{cases}
        *) words="" ;;
    esac
    case "$cmd:${{COMP_WORDS[COMP_CWORD-1]}}" in
{flag_cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if [[ ${{#COMPREPLY[@]}} -eq 0 ]]; then COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -o default -F _phalanx phalanx
"""
    if shell == "zsh":  # zsh runs the bash function through its bash-completion layer
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body
