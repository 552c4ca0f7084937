"""Pasted text for long prompts: fifteen passages written for ngsd (all names invented).

Paragraphs are separated by blank lines; a request may be put between two of them.
"""

FILLERS = {
    "meeting_notes": """Weekly product sync - Tuesday

Attendees: Mara (product), Dev (backend), Ilse (design), Tunde (support), Kofi (QA).

1. Release status. Version 4.2 is feature-complete. Dev said the migration script for the new invoice table ran cleanly on staging, but it took eleven minutes on the largest customer copy, which is longer than the maintenance window allows. Action: Dev to split the migration into two steps and measure again by Thursday.

2. Support backlog. Tunde reported 143 open tickets, down from 190 last week. The biggest group is still password-reset emails landing in spam for customers on one large email provider. Ilse suggested changing the sender name and simplifying the template. Action: Tunde and Ilse to draft a new reset email and send it to five affected customers for feedback.

3. Design review. Ilse showed the new onboarding screens. Everyone liked the progress bar, but Kofi pointed out that the "skip" button is hard to see in dark mode. Mara asked whether we can test the new flow with a small group first. Action: Ilse to fix contrast; Mara to set up a 10 percent rollout behind a flag.

4. QA. Kofi found two regressions in the export feature: dates are shifted by one day for users in time zones west of UTC, and exports with more than 10,000 rows time out. The date bug is already fixed on a branch; the timeout needs paging on the server side. Action: Dev to review the branch today; Kofi to write a test with a 50,000-row account.

5. Any other business. The team agreed to move the retro to Friday afternoon because of the public holiday. Mara reminded everyone to log their holiday plans in the shared calendar before the end of the month.

Next meeting: Tuesday, same time. Notes taken by Kofi.""",

    "coffee_manual": """BREWMASTER 300 - QUICK START GUIDE

Thank you for choosing the Brewmaster 300. Please read these instructions before first use and keep them for future reference.

Before first use. Remove all packaging and stickers. Rinse the water tank and the drip tray in warm soapy water and dry them. Place the machine on a flat, heat-resistant surface at least 10 cm away from walls and cupboards. Do not place it near a sink where it could be splashed.

Filling the tank. Lift the lid at the back and fill the tank with fresh, cold water up to the MAX line. Do not use sparkling water or milk in the tank. In areas with hard water, we recommend filtered water to reduce scale.

Rinsing cycle. Before brewing your first coffee, run two full tanks of water through the machine without coffee. Press and hold the POWER button for three seconds until the light flashes blue, then press the large cup button. This removes dust from manufacturing.

Brewing. Add 7 to 9 grams of ground coffee per small cup to the filter holder, tamp it lightly, and lock it into place by turning it to the right. Place a cup under the spout and press the small cup or large cup button. The machine stops automatically.

Steam wand. Turn the steam dial slowly to release steam. Always hold the milk jug by its handle and keep your hands away from the wand tip, which becomes very hot. After use, wipe the wand with a damp cloth and release a short burst of steam to clear it.

Descaling. When the orange light comes on, the machine needs descaling. Use only the Brewmaster descaling liquid diluted as shown on the bottle, and follow the descaling program described on page 12.

Troubleshooting. If the coffee drips slowly, the grind may be too fine or the filter may be packed too tightly. If no water comes out, check that the tank is seated correctly. If the machine shows a red light, unplug it, wait ten minutes and try again. If the problem continues, contact customer service.

Warranty. This product has a two-year warranty from the date of purchase. Keep your receipt.""",

    "lighthouse_story": """The Keeper of Gull Point

Every evening at six, Ada climbed the one hundred and twelve steps of the Gull Point lighthouse. She had done it for nineteen years, first with her father and then alone, and she knew the sound of each step the way other people know the voices of their friends.

The light had been automatic for a decade now. A small grey box in the storeroom switched it on at dusk and off at dawn, and an engineer from the mainland came twice a year to check it. Nobody needed Ada to climb the stairs. But she liked to stand at the top while the lamp turned, watching the beam sweep across the water and the fishing boats heading home.

That November a storm came in faster than the forecast had said. By half past five the waves were breaking over the harbour wall, and the rain came sideways. Ada climbed anyway. At the top she found the lamp dark. The grey box had failed.

She knew what to do, because her father had made her practise it every spring. She opened the old cabinet, found the brass crank and the spare bulb wrapped in newspaper, and started the manual mechanism. Her arms ached after ten minutes. After thirty she could no longer feel her fingers. But the beam turned.

Out on the water, the little boat Marigold had lost its engine and was drifting toward the rocks below the point. Her skipper, a young man named Ewan, saw the light come on and understood where he was. He dropped the anchor just in time.

In the morning the harbourmaster came up the hill with a flask of tea and a new box for the storeroom. He found Ada asleep in the chair at the top of the tower, the crank still in her hand. He didn't wake her. He sat down on the top step and watched the sea, which was grey and calm now, as if nothing had happened at all.""",

    "email_thread": """From: Jordan Blake
To: Office team
Subject: Office move - update

Hi all,

Quick update on the move to the new building on Harbour Street. The landlord has confirmed we can get the keys on the 14th. Movers are booked for the 16th and 17th, so please have your desks packed by the end of the day on the 15th. Crates will be delivered on the 10th.

Thanks,
Jordan

From: Sam Okafor
To: Jordan Blake
Subject: RE: Office move - update

Hi Jordan,

Thanks for this. Two questions: will the IT team move our monitors and docking stations, or do we pack them ourselves? And is there bike parking at the new place? A few of us cycle in.

Sam

From: Jordan Blake
To: Sam Okafor
Subject: RE: RE: Office move - update

Hi Sam,

IT will handle monitors, docks and phones; please just label them with your name using the stickers in the crates. There is a bike room in the basement with space for about twenty bikes, and showers on the first floor. I'll send a floor plan later this week.

Jordan

From: Priti Nair
To: Office team
Subject: RE: Office move - update

Hi everyone,

Just a reminder that the kitchen at the new office won't be ready until the 21st, so we'll have a temporary coffee station on the second floor. If anyone has dietary needs for the welcome lunch on the 18th, please let me know by Friday. So far we have four vegetarians, one vegan and one person with a nut allergy.

Also, the old office needs to be left tidy. Anything left behind after the 17th will be donated or recycled.

Best,
Priti""",

    "inventory_code": """Here's the module I'm working on:

```python
\"\"\"Small inventory helper used by the shop's back office.\"\"\"

from dataclasses import dataclass, field
from datetime import date


@dataclass
class Item:
    sku: str
    name: str
    quantity: int = 0
    reorder_level: int = 5
    history: list = field(default_factory=list)

    def add(self, amount, when=None):
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.quantity += amount
        self.history.append((when or date.today(), amount))

    def remove(self, amount, when=None):
        if amount > self.quantity:
            raise ValueError(f"only {self.quantity} of {self.sku} left")
        self.quantity -= amount
        self.history.append((when or date.today(), -amount))

    def needs_reorder(self):
        return self.quantity <= self.reorder_level


class Inventory:
    def __init__(self):
        self.items = {}

    def register(self, item):
        if item.sku in self.items:
            raise KeyError(f"duplicate sku {item.sku}")
        self.items[item.sku] = item

    def low_stock(self):
        return [i for i in self.items.values() if i.needs_reorder()]

    def total_units(self):
        return sum(i.quantity for i in self.items.values())

    def report(self):
        lines = []
        for item in sorted(self.items.values(), key=lambda i: i.name):
            flag = " (reorder)" if item.needs_reorder() else ""
            lines.append(f"{item.sku:<8} {item.name:<20} {item.quantity:>5}{flag}")
        return "\\n".join(lines)
```

It works for the shop, but the history list grows forever and the report is slow when we have a few thousand items. We run it once a night from a cron job, and it writes the report to a text file that the manager reads in the morning.""",

    "recipe_blog": """Grandma's Sunday Lentil Stew

There is a particular smell that tells me it's Sunday: onions softening slowly in olive oil, then garlic, then a pinch of cumin hitting the hot pan. My grandmother made this stew every week for as long as I can remember, usually in the same dented orange pot that now lives in my kitchen.

She never wrote the recipe down. When I finally asked her to teach me, she laughed and said it was "a handful of this and a splash of that." So I stood next to her with a notebook and measured everything she did before she could throw it into the pot. What follows is my best attempt at writing down something that was never meant to be written.

The secret, if there is one, is patience. The onions need a full fifteen minutes on low heat until they are sweet and golden. The lentils need to simmer gently, not boil, or they fall apart and turn the stew into mush. And the lemon juice goes in at the very end, off the heat, so it stays bright.

You can use brown or green lentils; red ones cook too fast for this recipe. If you don't have fresh tomatoes, a tin works perfectly well. My grandmother always added a bay leaf and then forgot to take it out, so whoever found it in their bowl got to choose the dessert.

This recipe feeds six people, or four very hungry ones. It keeps for four days in the fridge and tastes even better on the second day. I like to serve it with crusty bread and a spoonful of thick yoghurt, and my kids like it with grated cheese on top, which would have horrified my grandmother.

Before we get to the ingredients, a quick note on the pot. Any heavy pot with a lid will do, but a cast iron one holds the heat evenly, which helps the lentils cook at the same speed.""",

    "travel_itinerary": """Lisbon and Sintra - 5 days (draft itinerary)

Day 1 - Arrival. Land at 11:40, metro red line to Alameda, change to green for Baixa-Chiado. Check in at the guesthouse on Rua da Misericórdia from 14:00. Afternoon walk through Chiado and Bairro Alto, sunset at the Miradouro de São Pedro de Alcântara. Dinner booked at 20:30 at a small place near Largo do Carmo.

Day 2 - Alfama and Castle. Tram 28 early (before 9:00) to avoid queues. Castelo de São Jorge when it opens, then wander down through Alfama. Lunch at a grilled-sardine place near the cathedral. Afternoon: tile museum (closed Mondays!). Evening fado show, tickets bought online.

Day 3 - Belém. Train from Cais do Sodré to Belém, about 10 minutes. Jerónimos Monastery (book tickets ahead), the monument to the discoveries, and the tower. Custard tarts at the famous bakery; the queue moves fast. Back to the city for a late afternoon at the LX Factory.

Day 4 - Sintra day trip. Train from Rossio station, 40 minutes. Pena Palace first thing (timed entry 9:30), then the Moorish Castle walk. Lunch in the old town. If energy allows, Quinta da Regaleira in the afternoon. Last train back around 19:00.

Day 5 - Cascais and departure. Morning train along the coast to Cascais, swim if warm. Return by 14:00, collect bags, airport by 16:30 for the 18:50 flight.

Budget notes: metro day pass about 7 euros, Sintra palace tickets around 20 each, meals 15 to 30 per person. Bring comfortable shoes; the hills are steep and the pavements get slippery when wet.""",

    "printing_lecture": """Lecture 7 notes - The printing press and the spread of ideas

Before the 1450s, books in Europe were copied by hand, mostly in monasteries and, later, in commercial workshops near universities. A single copy of a large book could take months, which made books rare and expensive.

Johannes Gutenberg, working in Mainz, combined several existing technologies into a new system: movable metal type cast in a hand mould, an oil-based ink that stuck to metal, and a screw press adapted from those used for wine and paper. The Gutenberg Bible, finished around 1455, showed that printed books could match the quality of manuscripts.

The spread was fast. By 1500, presses were working in more than 250 European towns, and historians estimate that millions of books had been printed. Venice became a major centre, partly because of its trade networks and its skilled workers.

Effects discussed in class:
- Standardisation: the same text could be read identically in different cities, which helped scholars compare and correct works.
- Vernacular languages: printers sold more books in local languages than in Latin, which strengthened national languages.
- Religion: the Protestant Reformation used pamphlets and printed sermons to spread quickly; Luther's writings were among the best sellers of the time.
- Science: printed tables, diagrams and maps could be copied accurately, which supported the work of astronomers and anatomists.

Counterpoints: literacy was still limited, many printed works were religious or practical rather than new ideas, and authorities quickly introduced licensing and censorship.

For next week: read chapter 4 of the textbook and prepare a one-page comparison of the printing press with the early internet. Think about speed, cost, gatekeepers, and who could become a publisher.""",

    "terms_of_service": """TERMS OF USE - PHOTOSHARE COMMUNITY

1. Acceptance. By creating an account or using the PhotoShare app, you agree to these terms. If you do not agree, do not use the service.

2. Eligibility. You must be at least 16 years old, or the minimum age in your country if it is higher. Accounts created for someone else without their consent will be closed.

3. Your content. You keep ownership of the photos and text you upload. By posting public content, you give PhotoShare a non-exclusive, worldwide licence to host, display and distribute it within the service. You can delete your content at any time; copies may remain in backups for up to 30 days.

4. Community rules. Do not upload content that you do not have the right to share, that shows private individuals without their consent, or that harasses, threatens or discriminates against others. Do not use automated tools to collect other users' data.

5. Reporting. Use the report button on any post or profile. Reports are reviewed by our moderation team, usually within 48 hours. Repeated or serious violations may lead to suspension.

6. Paid features. Premium storage is billed monthly or yearly. You can cancel at any time; access continues until the end of the paid period. Refunds are given where required by law.

7. Privacy. How we process personal data is described in our Privacy Notice, which forms part of these terms.

8. Changes. We may update these terms. If a change is significant, we will notify you in the app at least 14 days before it takes effect.

9. Liability. The service is provided "as is". To the extent allowed by law, PhotoShare is not liable for indirect losses or for content posted by other users.

10. Contact. Questions about these terms can be sent through the Help section of the app.""",

    "support_chat": """[Chat transcript - ticket #58213]

Customer: Hi, my washing machine stopped halfway through a cycle and now the door won't open.
Agent (Lina): Hello, I'm sorry about that! Can you tell me the model number? It's on a sticker inside the door frame or on the back.
Customer: It's a WM-7420.
Agent (Lina): Thank you. Is there any water still in the drum?
Customer: Yes, quite a lot. And there's an error code on the display, E21.
Agent (Lina): E21 usually means the machine couldn't drain. The door stays locked for safety while there is water inside. First, please turn the machine off and unplug it.
Customer: Done.
Agent (Lina): At the bottom right of the front panel there's a small flap. Behind it you'll find the drain filter and a thin emergency hose. Put a shallow tray and some towels underneath, pull out the small hose and remove its cap to let the water out slowly.
Customer: OK, water is coming out. This is going to take a while.
Agent (Lina): Yes, it can take several trays. Once it stops, unscrew the filter anticlockwise. Often there's a coin, a hair clip or a sock blocking it.
Customer: Found it, there was a hair tie and a lot of fluff.
Agent (Lina): Great. Clean the filter under the tap, screw it back firmly, and close the flap. After a couple of minutes, plug the machine back in; the door should unlock.
Customer: It clicked open! Thank you so much.
Agent (Lina): You're welcome! I'd suggest cleaning the filter every couple of months. Is there anything else I can help with today?
Customer: No, that's everything.
Agent (Lina): Have a lovely day!""",

    "council_news": """Council approves new cycle lanes on Mill Road after long debate

The town council voted 9 to 6 on Wednesday evening to build protected cycle lanes along Mill Road, one of the busiest routes into the town centre. Construction is expected to start in the spring and take about five months.

The plan will remove 42 on-street parking spaces and replace them with kerb-separated lanes on both sides of the road. Two new pedestrian crossings will be added near the primary school and the health centre.

Supporters said the change would make the road safer for children and older residents. Councillor Ruth Adeyemi, who chairs the transport committee, pointed to figures showing 23 collisions involving cyclists on Mill Road in the past three years. "People tell us they would cycle more if they felt safe," she said. "This is a chance to give them that."

Several shop owners spoke against the plan during the public session. They worried that losing parking spaces would drive customers to the out-of-town retail park. The council has promised a loading bay for deliveries and a new short-stay car park on the site of the old bus depot.

Residents' groups were divided. The Mill Road Residents' Association welcomed the scheme, while a petition asking for a one-year trial instead gathered more than 1,200 signatures.

The project will cost an estimated 2.3 million pounds, most of it from a regional active-travel fund. The council says it will publish traffic and air-quality measurements before and after the works, and review the scheme after eighteen months.

A public drop-in session with the engineers is planned for next month at the library.""",

    "project_readme": """# tidy-csv

A small command-line tool that cleans up messy CSV files.

## Features

- Detects the delimiter (comma, semicolon, tab or pipe) automatically.
- Trims whitespace and normalises line endings.
- Converts dates in common formats to ISO 8601 (`YYYY-MM-DD`).
- Removes fully empty rows and columns.
- Reports rows with the wrong number of fields instead of silently dropping them.

## Installation

```
pip install tidy-csv
```

Python 3.9 or newer is required.

## Usage

```
tidy-csv input.csv -o clean.csv
tidy-csv input.csv --dates day-first --drop-empty
tidy-csv *.csv --report problems.txt
```

Run `tidy-csv --help` for all options.

## Configuration

Options can also be set in a `tidy-csv.toml` file in the working directory:

```
delimiter = "auto"
dates = "day-first"
drop_empty = true
```

Command-line flags take precedence over the file.

## Contributing

Bug reports and pull requests are welcome. Please run the tests with `pytest` before opening a pull request, and add a test for any bug you fix. We follow the Black code style.

## Known limitations

- Files larger than available memory are not supported yet; streaming mode is planned.
- Quoted fields containing newlines are handled, but very unusual quoting may confuse the delimiter detection.

## Licence

MIT. See the LICENSE file.""",

    "cover_letter": """Dear Hiring Committee,

I am writing to apply for the position of Community Programmes Coordinator at the Riverside Arts Centre. I have spent the last six years organising workshops and events for young people and older adults, and I would love to bring that experience to a venue I have admired since I moved to the city.

In my current role at Northgate Youth Trust, I coordinate a weekly programme of music, drama and digital-media workshops for around 120 teenagers. I manage a team of eight freelance tutors, a yearly budget of 85,000 pounds, and partnerships with three local schools. Last year I led a project that paired teenagers with residents of a care home to record an oral history podcast; it was shortlisted for a regional community award and is now used in local history lessons.

Before that, I worked as a volunteer coordinator at a city library, where I recruited and trained over 60 volunteers for a reading programme for children. I learned how to match people's skills with the right tasks, and how to keep volunteers motivated through regular thanks and small celebrations.

I am particularly excited by the Riverside's plan to open a community studio next year. I have experience writing grant applications, including two successful bids to national arts funders, and I would be glad to help secure funding and design a programme for the new space.

I am organised, calm under pressure, and I enjoy the practical side of events as much as the creative side: booking rooms, checking accessibility, and making sure every participant feels welcome.

Thank you for considering my application. I would welcome the chance to discuss how I could contribute to the Centre's work.

Yours faithfully,
Alex Morgan""",

    "soil_abstract": """Title: Seasonal changes in soil bacterial communities under cover crops in a temperate vegetable farm

Abstract. Cover crops are widely promoted to improve soil health, but their effect on soil bacteria across seasons is less well understood. We sampled soil from 24 plots on a working vegetable farm over two years, comparing bare winter fallow with three cover-crop mixes: rye alone, rye with vetch, and a five-species mix. Bacterial communities were characterised by sequencing a marker gene, and we measured soil organic carbon, nitrate and moisture at each sampling.

Cover-cropped plots had higher bacterial diversity than bare plots in late winter, with the largest difference under the five-species mix. The differences were smaller by midsummer, after the cover crops had been incorporated and vegetables planted. Groups associated with nitrogen cycling were more abundant after the legume mixes, consistent with the higher nitrate levels we measured in spring.

Introduction. Soil microbes drive nutrient cycling, influence soil structure and affect plant health. Farming practices such as tillage, fertilisation and crop rotation change microbial communities, but results from short experiments often disagree, partly because communities shift with season and weather.

Cover crops, grown between cash crops rather than for harvest, protect soil from erosion, add organic matter and, in the case of legumes, fix nitrogen. Several studies have reported higher microbial biomass under cover crops, but fewer have followed communities through a full year on a commercial farm with normal management.

Our aims were to (1) compare bacterial diversity and composition under different cover crops and bare fallow, (2) describe how these differences change through the seasons, and (3) relate community changes to measured soil properties. We expected the most diverse mix to support the most diverse bacterial community, with the effect fading after incorporation.""",

    "moving_diary": """Week three in the new city

I keep thinking I'll stop getting lost, and then I take the wrong exit from the station again and end up in a park I've never seen. To be fair, it's a nice park. There's a pond with an angry swan and a kiosk that sells the best cinnamon buns I've had in years, so getting lost has its rewards.

The flat is slowly starting to feel like mine. I finally hung the pictures up yesterday, after two weeks of them leaning against the wall, and bought a rug so the living room doesn't echo. The radiator in the bedroom still knocks at 6 a.m. like someone trying to get in, but the landlord says a plumber will come on Thursday. We'll see.

Work is fine. Everyone is friendly but busy, and I haven't worked out the unwritten rules yet: who takes their lunch at their desk, whether it's strange to bring in cake, why the printer on the third floor is apparently "cursed". My manager, Ines, took me for coffee on Monday and told me not to worry about being productive for the first month. I'm trying to believe her.

The hardest part is the evenings. At home I always had someone to call for a quick walk or a drink. Here I cook dinner, watch something, and go to bed early. I joined a climbing gym on Tuesday because the website said beginners' nights are a good way to meet people. I fell off the easiest wall four times, but a woman called Bea showed me how to use my legs instead of my arms, and we're going again next week.

Mum calls every Sunday and asks if I'm eating vegetables. I tell her yes, which is mostly true. Tomorrow I'm going to try the market by the river that everyone keeps mentioning.""",
}
