#!/usr/bin/env python3
"""Renders chat templates the way Hugging Face transformers does.

The independent oracle for tests/template_golden.rs: it mirrors the Jinja
environment of transformers' `apply_chat_template` (sandboxed, trim_blocks,
lstrip_blocks, loopcontrols, its own tojson, raise_exception, strftime_now and
the `{% generation %}` tag), using jinja2 alone.

Job on stdin:
  {"templates": {"name": {"source": "...", "bos_token": "<s>", "eos_token": "</s>"}},
   "conversations": {"name": [{"role": "user", "content": "..."}]}}
Answer on stdout: a list of
  {"template", "conversation", "add_generation_prompt", and one of
   "output", "raised" (raise_exception's message) or "failed" (any other error)}
for every template x conversation x add_generation_prompt (false, true).
"""

import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRaised(Exception):
    pass


def raise_exception(message):
    raise TemplateRaised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # As transformers defines it: jinja2's own tojson escapes HTML characters.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


class Generation(jinja2.ext.Extension):
    """transformers' AssistantTracker when no mask is asked for: the body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def environment():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Generation, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    job = json.load(sys.stdin)
    env = environment()
    results = []
    for tname, template in job["templates"].items():
        compiled = env.from_string(template["source"])
        for cname, messages in job["conversations"].items():
            for add_generation_prompt in (False, True):
                result = {
                    "template": tname,
                    "conversation": cname,
                    "add_generation_prompt": add_generation_prompt,
                }
                try:
                    # transformers passes tools and documents even when absent.
                    result["output"] = compiled.render(
                        messages=messages,
                        tools=None,
                        documents=None,
                        add_generation_prompt=add_generation_prompt,
                        bos_token=template["bos_token"],
                        eos_token=template["eos_token"],
                    )
                except TemplateRaised as e:
                    result["raised"] = str(e)
                except Exception as e:  # the template is broken for this input
                    result["failed"] = f"{type(e).__name__}: {e}"
                results.append(result)
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
