"""A job's message within Discord's limits whatever it holds (cogs/jobs/presenting.py): the
end-to-end tests go through the fake Discord, which refuses what Discord refuses, but the
catalogue keeps prompts short; here the inputs are as large as anything could make them."""

from __future__ import annotations

from dataclasses import replace

from bot.dispatch.models import Job, JobState, JobStatus, Verb
from cogs.jobs.presenting import Position, end_notice, progress_bar, result_view, state_line, status_message

MARKDOWN = "*_~`|>#[]()\\" * 1000


def huge(status: JobStatus) -> Job:
    return Job("job:abc", "1", "2", "3", 2, "4", "5", Verb.CREATE,
               {"prompt": MARKDOWN, "style": MARKDOWN, "aspect_ratio": "9:16", "negative_prompt": MARKDOWN,
                "character": MARKDOWN}, None, status, JobState.DONE, None, 0, 1, 1, 1.0, 2.0, submitted_at=1.5,
               attachments=[{"url": "https://cdn.example/" + "v" * 700 + f"{n}.mp4"} for n in range(40)]
               + [{"url": f"https://cdn.example/{n}.mp4"} for n in range(6)],
               buttons=[{"label": label} for label in ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀",
                                                       "U1", "V2", "🔀", "Nope")],
               error=MARKDOWN, error_details=MARKDOWN + "more")


def within_limits(message) -> None:
    embed = message.embed.to_dict()
    assert len(message.content) <= 2000
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096 and len(embed["fields"]) <= 25
    assert all(0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024 for f in embed["fields"])
    assert len(message.embed) <= 6000
    if message.view is not None:
        rows = message.view.to_components()
        assert len(rows) <= 5 and all(len(row["components"]) <= 5 for row in rows)
        buttons = [c for row in rows for c in row["components"]]
        assert all(len(c.get("label") or "") <= 80 for c in buttons)
        assert all(len(c["url"]) <= 512 for c in buttons if "url" in c)
        ids = [c["custom_id"] for c in buttons if "custom_id" in c]
        assert len(ids) == len(set(ids))


def test_any_job_fits_discords_limits_in_every_state():
    for status in JobStatus:
        job = huge(status)
        for mention in (False, True):
            within_limits(status_message(job, mention=mention))
        within_limits(status_message(replace(job, state=JobState.WAITING, status=JobStatus.CREATED), Position(7, 9)))
        within_limits(status_message(replace(job, state=JobState.SUBMITTED, status=JobStatus.PROGRESS, progress=55)))


def test_a_completed_job_shows_each_button_once_grouped_and_a_link_per_video_that_fits():
    view = result_view(huge(JobStatus.COMPLETED))
    rows = [[c.get("label") or c["emoji"]["name"] for c in row["components"]] for row in view.to_components()]
    assert rows == [["Upscale 1", "Upscale 2", "Upscale 3", "Upscale 4"],
                    ["Variation 1", "Variation 2", "Variation 3", "Variation 4"], ["Redo", "🔀"]]
    short = replace(huge(JobStatus.COMPLETED), attachments=[{"url": f"https://cdn.example/{n}.mp4"} for n in range(4)])
    rows = result_view(short).to_components()
    assert [c["label"] for c in rows[3]["components"]] == ["Video 1", "Video 2", "Video 3", "Video 4"]
    assert result_view(huge(JobStatus.FAILED)) is None


def test_the_state_line_and_bar():
    job = replace(huge(JobStatus.PROGRESS), state=JobState.SUBMITTED, progress=37)
    assert state_line(job) == "progress 37%" and progress_bar(37) == "▰▰▰▱▱▱▱▱▱▱ 37%"
    assert progress_bar(100) == "▰▰▰▰▰▰▰▰▰▰ 100%" and progress_bar(0) == "▱▱▱▱▱▱▱▱▱▱ 0%"
    assert state_line(replace(job, state=JobState.WAITING, status=JobStatus.CREATED), Position(2, 3)) == (
        "waiting · position 2 of 3")
    message = status_message(job)
    assert message.content == "progress 37% · jobid: job:abc\n▰▰▰▱▱▱▱▱▱▱ 37%"
    assert message.allowed_mentions.to_dict() == {"parse": []}  # no one is mentioned before the end
    ended = status_message(replace(job, status=JobStatus.COMPLETED, state=JobState.DONE), mention=True)
    assert ended.content.startswith("<@4> completed · jobid: job:abc\n")
    assert ended.allowed_mentions.to_dict() == {"parse": [], "users": [4]}  # the member, no one else


def test_the_end_notice_names_the_state_and_mentions_the_member_alone():
    done = replace(huge(JobStatus.COMPLETED), state=JobState.DONE)
    content, allowed = end_notice(done)
    assert content == "<@4> completed · jobid: job:abc · your video is ready"
    assert allowed.to_dict() == {"parse": [], "users": [4]}  # no @everyone, no role, no reply ping
    assert end_notice(replace(done, status=JobStatus.MODERATED))[0] == (
        "<@4> moderated · jobid: job:abc · your job ended without a video")
    assert end_notice(replace(done, status=JobStatus.CANCELLED)) is None
    assert end_notice(replace(done, status=JobStatus.PROGRESS, state=JobState.SUBMITTED)) is None
