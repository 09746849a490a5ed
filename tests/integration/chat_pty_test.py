#!/usr/bin/env python3
"""`strata chat` through a pseudo-terminal, as a user sees it: answers stream; the second turn
prefills only its own tokens (the KV cache is kept); /reset prefills everything again; /system
resets; Ctrl-C stops an answer and the chat goes on; /quit exits 0.

The model is a copy of the built-in stories260K with a chat template of the test's own. The pty
has NOFLSH set so a Ctrl-C typed right after a line does not discard the line: the interrupt then
always lands on that line's answer, with no timing involved.

Usage: chat_pty_test.py PATH/TO/strata SOURCE_DIR
"""

import os
import pty
import re
import shutil
import sys
import tempfile
import termios

strata, source = sys.argv[1], sys.argv[2]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL: " + message)


model = tempfile.mkdtemp(prefix="strata-chat-")
for name in os.listdir(os.path.join(source, "models", "stories260K")):
    shutil.copy(os.path.join(source, "models", "stories260K", name), model)
with open(os.path.join(model, "chat_template.jinja"), "w") as f:
    f.write("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
            "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")

pid, fd = pty.fork()
if pid == 0:
    attrs = termios.tcgetattr(0)
    attrs[3] |= termios.NOFLSH
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    os.execv(strata, [strata, "chat", model, "--max-new-tokens", "40"])

buffer = b""


def read_until_prompt():
    """Everything the chat wrote up to its next "> " prompt (answers and statistics)."""
    global buffer
    while True:
        at = buffer.find(b"> ")
        if at >= 0 and (at == 0 or buffer[at - 1:at] == b"\n"):
            out, buffer = buffer[:at], buffer[at + 2:]
            return out.decode("utf-8", "replace")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            out, buffer = buffer, b""
            return out.decode("utf-8", "replace")
        buffer += chunk


def say(line):
    os.write(fd, line.encode() + b"\n")
    text = read_until_prompt()
    return text


def stats(text):
    m = re.search(r"\[prefilled (\d+) of (\d+) prompt tokens, (\d+) new, [0-9.]+ tokens/s, ([a-z ]+)\]",
                  text)
    check(m is not None, "no statistics line in " + repr(text))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)) if m else (0, 0, 0, "")


read_until_prompt()  # the banner
first = say("Once upon a time")
p1, t1, n1, _ = stats(first)
check(p1 == t1, f"the first turn prefills its whole prompt ({p1} of {t1})")
check(n1 > 0 and len(first.split("[prefilled")[0].strip()) > 0, "the first answer has text")

second = say("The dog ran")
p2, t2, n2, _ = stats(second)
check(t2 > t1 + n1 // 2, f"the second prompt holds the conversation ({t2} tokens)")
check(p2 < t2 // 2, f"the second turn prefills only its own tokens ({p2} of {t2})")

check("reset" in say("/reset"), "/reset is acknowledged")
third = say("The dog ran")
p3, t3, _, _ = stats(third)
check(p3 == t3, f"after /reset the whole prompt is prefilled ({p3} of {t3})")

check("system" in say("/system You tell short stories."), "/system is acknowledged")
fourth = say("Lily")
p4, t4, _, _ = stats(fourth)
check(p4 == t4, "after /system the conversation starts again")

# Ctrl-C typed with the line: that answer stops at once, the chat goes on.
os.write(fd, b"Once upon a time\n\x03")
interrupted = read_until_prompt()
_, _, n5, why5 = stats(interrupted)
check(why5 == "interrupted", f"Ctrl-C stops the answer ({why5!r})")
check(n5 == 0, f"nothing is generated after Ctrl-C ({n5} tokens)")
after = say("Lily")
_, _, n6, why6 = stats(after)
check(n6 > 0 and why6 != "interrupted", "the chat goes on after Ctrl-C")

os.write(fd, b"/quit\n")
while True:
    try:
        if not os.read(fd, 4096):
            break
    except OSError:
        break
_, status = os.waitpid(pid, 0)
check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"exit status {status}")
shutil.rmtree(model)
print("FAILED" if failures else "PASSED")
sys.exit(1 if failures else 0)
